@aws @acceptance
Feature: The AWS deployment keeps the seed's promises
  RDS and ElastiCache Multi-AZ and encrypted, one NAT per zone, backends in two zones behind
  the load balancer, fresh backups, the alarms that matter. Read from the AWS APIs of the
  target's `aws:` section; nothing is changed. Skipped for targets without one.

  Scenario: RDS is Multi-AZ, encrypted, backed up and private
    When I read the RDS instance
    Then the RDS instance is Multi-AZ
    And its storage is encrypted
    And it keeps its backups as long as the target says
    And it is not publicly accessible
    And it runs the engine the target declares

  Scenario: The network spans two zones, each with its own NAT
    When I read the VPC
    Then it has subnets in at least 2 zones
    And the public subnets route to an internet gateway
    And each private subnet routes through the NAT of its own zone
    And no security group opens the database or cache port to the internet

  Scenario: The load balancer has healthy targets in two zones
    When I read the load balancer's targets
    Then every target is healthy
    And healthy targets are in at least 2 zones

  Scenario: The auto scaling group keeps two instances over two zones
    When I read the auto scaling group
    Then its minimum is at least 2 instances over at least 2 zones

  Scenario: ElastiCache fails over on its own and is encrypted
    When I read the ElastiCache replication group
    Then automatic failover and Multi-AZ are on
    And it is encrypted in transit and at rest

  Scenario: The newest backup is fresh
    When I list the backups
    Then the newest backup is younger than its interval plus slack and not empty

  Scenario: The alarms that matter exist
    Then every alarm the target names exists in CloudWatch
