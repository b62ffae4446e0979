@acceptance
Feature: The cache is replicated, used and persistent
  Redis holds sessions, the product cache and rate-limit counters. It has a replica and a
  failover manager, and keeps the persistence the deployment promises.

  Scenario: The cache has an online replica
    When I look at the cache's replication
    Then the cache master has an online replica

  Scenario: The cache's failover manager sees its master
    When I look at the cache's replication
    Then the failover manager sees the same master

  Scenario: Product reads go through the cache (cache-aside)
    When I read 5 evicted products twice each through the entrypoint
    Then the first read misses the cache and the second hits it, no slower

  Scenario: The cache keeps the persistence the target declares
    When I read the cache's persistence settings
    Then they match the persistence the target declares
