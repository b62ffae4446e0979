@resilience @destructive
Feature: Losing a whole zone keeps the shop answering
  A zone going dark takes its server, its database node and its Redis with it at once, all
  unreachable rather than stopped. The load balancer must route around it, and the database
  and the cache must fail over to the other zone: writes resume, and no acknowledged write is
  lost (the cache's asynchronous replication may lose about a second).

  Background:
    Given the deployment is healthy

  Scenario: Losing zone a keeps the shop answering and loses no acknowledged write
    Given a steady load of 20 requests per second on the health path
    And a writer placing 10 orders per second through the entrypoint
    And a writer committing 20 rows per second to the database
    And a writer setting 20 keys per second in the cache
    When 3 seconds pass
    And zone "a" goes down
    Then writes succeed again within 90 seconds
    And the cache accepts writes again within 60 seconds
    And the health path answered at least 99% of requests during the fault
    And no acknowledged write is lost
    And the cache lost at most 1 second of acknowledged writes

  Scenario: Losing zone a leaves the other zones their way out and the shop its health path
    Given a steady load of 20 requests per second on the health path
    And egress is probed from every zone 10 times a second
    When 3 seconds pass
    And zone "a" goes down
    And the fault lasts 5 seconds
    Then the health path answered at least 99% of requests during the fault
    And zone "a" lost egress within 2 seconds of the fault
    And the other zones never lost egress during the fault
