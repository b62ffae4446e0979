@resilience @destructive @load
Feature: What shoppers see while the database fails over
  Locust users browse and shop in the background while the fault is in effect; every request
  they make is on the run's timeline next to the probes and the fault, so the report shows
  when their requests failed or slowed down and when they came back.

  Background:
    Given the deployment is healthy

  Scenario: Users browsing and shopping through a database failover
    Given 30 users browsing and shopping
    And a writer committing 20 rows per second to the database
    When 3 seconds pass
    And the database fails over
    And 5 seconds pass
    Then writes succeed again within 120 seconds
    And no acknowledged write is lost
    And at least 90% of the users' requests succeeded during the fault
