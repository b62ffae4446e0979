@resilience @destructive
Feature: Losing a server keeps the shop answering
  The load balancer checks the health path and takes a dead server out of rotation; the
  other servers carry all traffic. Losing a whole server also loses what ran there (in the
  seed, the database primary and the Redis master): they fail over too. Servers are named by
  their place in the target ("the first server"), so this runs on any deployment.

  Background:
    Given the deployment is healthy

  Scenario: Losing the first server keeps the health path answering and moves traffic
    Given a steady load of 20 requests per second on the health path
    When 3 seconds pass
    And the first server is killed
    And the fault lasts 10 seconds
    Then the health path answered at least 99% of requests during the fault
    And all traffic moves to the other servers within the load balancer's detection time

  Scenario: A crashed backend process is restarted without users noticing much
    Given a steady load of 20 requests per second on the health path
    When 3 seconds pass
    And the backend of the last server is killed
    And the fault lasts 5 seconds
    Then the health path answered at least 99% of requests during the fault
    And the health path answers again within 10 seconds
