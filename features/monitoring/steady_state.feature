@monitoring
Feature: The pager stays silent while nothing is broken
  An alert that fires in the steady state is noise that teaches people to ignore the pager.
  Under a steady load, no alert may fire.

  Scenario: No alert fires in the steady state under load
    Given the deployment is healthy
    And no alert is firing
    And a steady load of 20 requests per second on the health path
    When 30 seconds pass
    Then no alert fires during the steady state
