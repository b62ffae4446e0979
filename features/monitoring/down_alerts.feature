@monitoring @resilience @destructive
Feature: The pager rings when a server, the database or the cache goes down
  The deployment promises "alerts fire when something is down": Prometheus scrapes every
  server's exporters and Alertmanager sends to the team's receiver. The seed's rules:
  InstanceDown (up == 0 for 1m), PostgreSQLDown (pg_up == 0 for 1m) and RedisDown
  (redis_up == 0 for 1m), all critical. Each scenario breaks one thing and judges the pager:
  the alert fires, reaches the receiver, and resolves once the fault is healed.

  Background:
    Given the deployment is healthy
    And no alert is firing

  Scenario: A server lost: InstanceDown fires, reaches the receiver and resolves
    Given a steady load of 20 requests per second on the health path
    When the first server is killed
    Then the alert "InstanceDown" fires within 120 seconds
    And it reaches the receiver
    And it resolves within 180 seconds after the heal
    And the time to detect is under 120 seconds
    And the health path answered at least 99% of requests during the fault

  Scenario: The database primary lost: PostgreSQLDown fires, reaches the receiver and resolves
    Given a writer committing 20 rows per second to the database
    When the database primary crashes
    Then the alert "PostgreSQLDown" fires within 120 seconds
    And it reaches the receiver
    And writes succeed again within 120 seconds
    And it resolves within 180 seconds after the heal
    And the time to detect is under 120 seconds

  Scenario: The cache master lost: RedisDown fires, reaches the receiver and resolves
    Given a writer setting 50 keys per second in the cache
    When the cache master crashes
    Then the alert "RedisDown" fires within 120 seconds
    And it reaches the receiver
    And the cache accepts writes again within 60 seconds
    And it resolves within 180 seconds after the heal
    And the time to detect is under 120 seconds
