@resilience @destructive
Feature: The cache survives the loss of its master
  Redis replication is asynchronous: a master crash may lose the writes it had not yet sent
  to its replica. The deployment promises failover within a minute and at most about one
  second of acknowledged writes lost.

  Background:
    Given the deployment is healthy

  Scenario: A Redis master crash: the cache answers again and lost writes are counted
    Given a writer setting 50 keys per second in the cache
    When 3 seconds pass
    And the cache master crashes
    Then the cache accepts writes again within 60 seconds
    And the cache lost at most 1 second of acknowledged writes
