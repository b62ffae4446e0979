@monitoring @resilience @destructive
Feature: A game day stops when the pager rings for what it did not expect
  Like a FIS experiment's stop condition on a CloudWatch alarm: when an alert the scenario
  names fires (or any critical alert it did not expect), every fault of the scenario is healed
  within a second of the alert arriving, and the scenario fails naming the alert. This
  scenario expects the stop, and judges how fast it came.

  Scenario: The cache's alert stops the game day within a second of arriving
    Given the deployment is healthy
    And no alert is firing
    And the game day stops if alert "RedisDown" fires
    When the cache master crashes
    Then the game day is stopped within 1 second of "RedisDown" arriving
