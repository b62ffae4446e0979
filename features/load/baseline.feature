@load
Feature: The shop is as fast as its recorded baseline
  A baseline is recorded once on a deployment known to be good:
    gameday baseline record --target lab --users 16 --spawn-rate 16 --duration 30
  After each deployment the same load runs again and is compared with it. Without a baseline
  for the target, these scenarios are skipped and say how to record one.

  Background:
    Given the deployment is healthy
    And a load baseline for this target

  Scenario: Browsing and shopping stay within the baseline
    Given a load of 16 users for 30 seconds
    Then p95 latency of "product page" is within 50% of the baseline
    And throughput is within 20% of the baseline
    And at most 1% of the load's requests failed
