"""docs/aws.md's IAM policy lists exactly the AWS actions the code calls: no more, no fewer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import botocore.session
from botocore import xform_name

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "chaos" / "aws").glob("*.py")), ROOT / "gameday" / "aws_facts.py",
           ROOT / "gameday" / "aws.py"]  # fmt: skip
# boto3 service name -> IAM action prefix
SERVICES = {
    "autoscaling": "autoscaling", "cloudwatch": "cloudwatch", "ec2": "ec2",
    "elasticache": "elasticache", "elbv2": "elasticloadbalancing", "rds": "rds", "s3": "s3",
    "sts": "sts",
}  # fmt: skip
# API operations whose IAM action has another name.
IAM_NAME = {"s3:ListObjectsV2": "s3:ListBucket"}


def policy_actions() -> set[str]:
    doc = (ROOT / "docs" / "aws.md").read_text()
    block = re.search(r"```json\n(.*?)```", doc, re.S)
    assert block is not None
    policy = json.loads(block.group(1))
    return {a for s in policy["Statement"] for a in s["Action"]}


def called_actions() -> list[set[str]]:
    """For each AWS operation the code calls, the IAM actions it may be (one, unless two
    services share the method name, like describe_events of RDS and ElastiCache)."""
    session = botocore.session.get_session()
    by_method: dict[str, set[str]] = {}
    for service, prefix in SERVICES.items():
        for op in session.get_service_model(service).operation_names:
            action = f"{prefix}:{op}"
            by_method.setdefault(xform_name(op), set()).add(IAM_NAME.get(action, action))
    calls = []
    for path in SOURCES:
        text = path.read_text()
        used = {s for s in SERVICES if f'"{s}"' in text}
        names = set(re.findall(r"\.(\w+)\(", text)) | set(re.findall(r'"(\w+)"', text))
        for name in sorted(names & set(by_method)):
            candidates = {a for a in by_method[name] if a.split(":")[0] in
                          {SERVICES[s] for s in used | {"sts"}}}  # fmt: skip
            if candidates:
                calls.append(candidates)
    return calls


def test_the_policy_lists_exactly_what_the_code_calls() -> None:
    policy = policy_actions()
    calls = called_actions()
    uncovered = [sorted(c) for c in calls if not c & policy]
    assert uncovered == [], "called but not in docs/aws.md's policy"
    unused = sorted(a for a in policy if not any(a in c for c in calls))
    assert unused == [], "in the policy but never called"
    assert {"ec2:DeleteRoute", "rds:RebootDBInstance", "elasticache:TestFailover"} <= policy
