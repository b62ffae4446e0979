@acceptance
Feature: Orders are stored on a replicated database
  The database has a synchronous standby (RDS Multi-AZ, or pg_auto_failover), so an
  acknowledged order survives the loss of the primary.

  Scenario: An order written through the API can be read back
    When I place an order through the entrypoint
    Then it can be read back from the primary at once and from the replica within the stated lag

  Scenario: The database has a streaming standby
    When I look at the primary's replication
    Then a standby is streaming with lag under the target's bound, synchronously if declared
