"""Faults of an AWS target, one module per service: rds, ec2, nat, elasticache, and zone (the
whole-zone outage built from the others). They share `session.AwsFault`: clients from the
target's `aws:` section and the account guard."""
