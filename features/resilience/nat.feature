@resilience @destructive
Feature: A NAT per zone: losing one cuts only its own zone's egress
  The seed's private subnets reach the internet through a NAT gateway in their own zone. When
  one NAT fails, only that zone loses outbound traffic; the other zone and the shop itself
  (served through the load balancer) do not notice.

  Background:
    Given the deployment is healthy

  Scenario: Disabling the NAT of zone a cuts only zone a's egress
    Given a steady load of 20 requests per second on the health path
    And egress is probed from every zone 10 times a second
    When 3 seconds pass
    And the NAT of zone "a" is disabled
    And the fault lasts 5 seconds
    And the fault is healed
    Then each zone reaches the internet through a NAT of its own
    And zone "a" lost egress within 2 seconds of the fault
    And the other zones never lost egress during the fault
    And the health path answered at least 99% of requests during the fault
    And zone "a" has egress again within 5 seconds of the heal
