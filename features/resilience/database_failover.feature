@resilience @destructive
Feature: The database fails over without losing acknowledged writes
  The deployment promises a synchronous standby: RDS Multi-AZ fails over in 1-2 minutes with
  RPO 0 (no acknowledged write lost); in the lab, pg_auto_failover does the same.

  Background:
    Given the deployment is healthy

  Scenario: Database failover under load loses no acknowledged write
    Given a steady load of 20 requests per second on the health path
    And a writer placing 10 orders per second through the entrypoint
    And a writer committing 20 rows per second to the database
    When 3 seconds pass
    And the database fails over
    Then writes succeed again within 120 seconds
    And no acknowledged write is lost
    And the health path answered at least 99% of requests during the fault

  Scenario: An unplanned primary crash recovers within a minute and loses nothing
    Given a steady load of 20 requests per second on the health path
    And a writer committing 20 rows per second to the database
    When 3 seconds pass
    And the database primary crashes
    Then writes succeed again within 60 seconds
    And no acknowledged write is lost
    And the health path answered at least 99% of requests during the fault
