@acceptance
Feature: The entrypoint serves CloudMart from every server
  After a deployment, users reach the shop through the load balancer, and every backend
  server takes its share of the traffic.

  Scenario: The entrypoint answers its health check
    When I request the health path through the entrypoint
    Then it answers 200

  Scenario: Every backend server is in rotation
    When I send 20 health checks through the entrypoint
    Then every server of the target answered some of them

  Scenario: The load balancer reports every backend server UP
    When I send 20 health checks through the entrypoint
    Then the load balancer reports every server UP
