@resilience @destructive
Feature: A partition between the zones makes no split brain
  When zone a and zone b cannot reach each other but both still reach the public side, each
  may believe the other is gone. The failover managers (pg_auto_failover's monitor, the
  Sentinels' quorum) must keep one primary and one master: during the partition no two nodes
  of a store take writes at once, and after it nothing acknowledged is lost.

  Background:
    Given the deployment is healthy

  Scenario: A partition between the zones does not make two primaries
    Given a writer committing 20 rows per second to the database
    And a writer setting 20 keys per second in the cache
    And every database node and cache node is asked for writes 5 times a second
    When 3 seconds pass
    And zones "a" and "b" are partitioned
    And the fault lasts 15 seconds
    And the fault is healed
    Then at most one database node accepted writes at a time during the fault
    And at most one cache node accepted writes at a time during the fault
    And no acknowledged write is lost
    And the cache lost no acknowledged write
