Feature: The trivial experiment (bench/vs_chaostoolkit.py runs it against Chaos Toolkit)
  The same experiment as the benchmark's Chaos Toolkit JSON: an HTTP steady-state probe, a
  command fault held 2 seconds, the steady state again, and the rollback (the heal, at the
  end of the scenario).

  @resilience @destructive
  Scenario: A command fault held 2 seconds is rolled back
    Given the deployment is healthy
    When the fault "touch-flag" is injected
    And 2 seconds pass
    And I request the health path through the entrypoint
    Then it answers 200
