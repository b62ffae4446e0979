@resilience @destructive
Feature: Losing a server keeps the shop answering
  The load balancer checks /health and takes a dead server out of rotation; the other zone
  carries all traffic. Losing a whole server also loses the database primary and the Redis
  master that ran there: they fail over too.

  Background:
    Given the deployment is healthy

  Scenario: Stopping server1 keeps /health answering and moves traffic to server2
    Given a steady load of 20 requests per second on "/health"
    When 3 seconds pass
    And server "server1" is killed
    And the fault lasts 10 seconds
    Then "/health" answered at least 99% of requests during the fault
    And all traffic moves to server "server2" within the load balancer's detection time

  Scenario: A crashed backend process is restarted without users noticing much
    Given a steady load of 20 requests per second on "/health"
    When 3 seconds pass
    And the backend of server "server2" is killed
    And the fault lasts 5 seconds
    Then "/health" answered at least 99% of requests during the fault
    And "/health" answers again within 10 seconds
