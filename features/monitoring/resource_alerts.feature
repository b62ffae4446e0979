@monitoring @resilience @destructive
Feature: The pager rings when a server runs out of CPU, memory or disk
  The seed's resource rules: HighCPUUsage, HighMemoryUsage and HighDiskUsage (above 80 % for
  5 minutes, warning). Each scenario fills one resource of the first server, bounded by the
  target's stress limits, and judges the pager: the alert fires, reaches the receiver, and
  resolves once the fault is healed. The bounds hold for the seed's own timings (a 5-minute
  CPU rate and `for: 5m`); on a deployment that evaluates faster they pass sooner.

  Background:
    Given the deployment is healthy
    And no alert is firing

  Scenario: A CPU-bound server: HighCPUUsage fires, reaches the receiver and resolves
    When the CPU of the first server is stressed
    Then the alert "HighCPUUsage" fires within 600 seconds
    And it reaches the receiver
    And it resolves within 420 seconds after the heal

  Scenario: A server out of memory: HighMemoryUsage fires, reaches the receiver and resolves
    When the memory of the first server is filled to 90%
    Then the alert "HighMemoryUsage" fires within 420 seconds
    And it reaches the receiver
    And it resolves within 120 seconds after the heal

  Scenario: A full disk: HighDiskUsage fires, reaches the receiver and resolves
    When the disk of the first server is filled to 90%
    Then the alert "HighDiskUsage" fires within 420 seconds
    And it reaches the receiver
    And it resolves within 120 seconds after the heal
