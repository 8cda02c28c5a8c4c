"""Every item of the deployment checklist, in one registry.

An item a machine can check names its check (checks.CHECKS) and `inv preflight` runs it; a
manual one says why no machine can. DEPLOYMENT-CHECKLIST.md is rendered from this registry by
`inv preflight.checklist --write`, and a unit test fails when the two differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Group = Literal["must", "should"]
GROUP_TITLES: dict[Group, str] = {
    "must": "Must complete (no deploy until each is done)",
    "should": "Should complete (one left open is a risk someone accepts, and says so)",
}


@dataclass(frozen=True)
class Item:
    id: str
    group: Group
    title: str
    check: str | None = None  # the name of its function in checks.CHECKS; None: manual
    why: str = ""  # manual items: why no machine can check it

    @property
    def automated(self) -> bool:
        return self.check is not None


ITEMS: tuple[Item, ...] = (
    # --- must, automated
    Item("config", "must", "Configuration is complete and valid (every problem inv env.check "
         "reports, secrets aside)", "config_valid"),
    Item("secrets", "must", "Secrets are set, strong (32 random bytes for generated ones) and "
         "not the example values of .env.example", "secrets_strong"),
    Item("ssh-host-keys", "must", "Every host's SSH key is pinned in the environment's "
         "known_hosts", "ssh_host_keys_pinned"),
    Item("engine", "must", "Docker Engine 20.10+ and Compose v2.20+ answer where the stack runs "
         "(remote: SSH, engine, Compose, disk and deploy lock, as inv deploy's own preflight)",
         "engine_versions"),
    Item("secret-files", "must", "Files holding secrets are private (mode 0600): secrets.env, "
         "the generated services.env.yml, the TLS keys, the release's .env on the host",
         "secret_files_private"),
    Item("disk", "must", "Free disk space and inodes where the stack runs", "disk_free"),
    Item("dns", "must", "The public names resolve, to the hosts' addresses on remote "
         "environments", "dns_resolves"),
    Item("tls", "must", "The TLS certificate is valid for the server names, its chain is "
         "complete and it has more than ALERT_CERT_EXPIRY_DAYS (14) days left",
         "tls_certificate"),
    Item("s3-bucket", "must", "The backup bucket is reachable and its objects are encrypted "
         "at rest (SSE)", "s3_bucket"),
    Item("backups", "must", "The newest verified backup of every database is younger than the "
         "RPO (BACKUP_RPO_HOURS)", "backups_fresh"),
    Item("registry-login", "must", "The registry accepts the deploy's login (IMAGE_REPOSITORY, "
         "REGISTRY_USERNAME, REGISTRY_PASSWORD)", "registry_login"),
    Item("clean-tree", "must", "The release is built from a clean git tree (no uncommitted or "
         "untracked file)", "clean_tree"),
    Item("migrations", "must", "The migrations applied on the target match the code's (none "
         "edited after it ran, the database not ahead of the code)", "migrations_match"),
    # --- must, manual
    Item("on-call", "must", "An on-call engineer is named for the deploy window and the day "
         "after, and knows the deploy is happening", why="The rota lives in the paging tool; "
         "the suite holds no account there, and knowing is a person's state."),
    Item("rollback-plan", "must", "The rollback plan is agreed and communicated: the release to "
         "return to (inv rollback) and who decides", why="Whether people were told and agreed "
         "is recorded nowhere a machine can read."),
    Item("change-approval", "must", "The change is approved as the team's change process "
         "asks", why="Approvals live in the ticket or review system, outside the suite."),
    Item("ci-green", "must", "The pipeline passed for the commit being deployed (tests, image "
         "scans)", why="The result lives in the CI service (GitHub Actions); the suite holds no "
         "token to read it."),
    Item("external-credentials", "must", "Third-party credentials (SMTP, payment provider "
         "webhook, S3 user) are the environment's own, not test-mode or another environment's",
         why="Only the provider knows whether a key is a test-mode key; its shape does not "
         "say."),
    Item("firewall", "must", "Only 80 and 443 (and SSH from the deploy network) are open to the "
         "hosts", why="Security groups and the provider's firewall sit outside the host; a "
         "scan from here does not see what the internet sees."),
    # --- should, automated
    Item("s3-lifecycle", "should", "A lifecycle rule on the suite's prefix expires old backups "
         "and aborts stale uploads (inv backup.lifecycle)", "s3_lifecycle"),
    Item("dr-drill", "should", "A restore drill (inv dr.drill) passed within "
         "DR_DRILL_INTERVAL_DAYS and met its RTO and RPO", "dr_drill_recent"),
    Item("alerts-test", "should", "Alert routing was tested end to end (inv alerts.test) within "
         "ALERT_TEST_INTERVAL_DAYS", "alerts_test_recent"),
    # --- should, manual
    Item("status-page", "should", "The status page has a maintenance notice ready",
         why="The status page is a third-party service the suite does not drive."),
    Item("stakeholders", "should", "Support and stakeholders know the deploy window and what "
         "changes for users", why="Telling people is a conversation, not a state to read."),
    Item("watch-dashboards", "should", "Someone watches error rate, p99 and saturation during "
         "and for an hour after the deploy", why="The bake window watches the first minutes; "
         "an hour of attention is a person's."),
    Item("runbooks", "should", "The runbooks of the alerts the release touches are current",
         why="Whether prose still matches the system needs a reader."),
    Item("load-tested", "should", "A release that changes a hot path was load-tested on "
         "staging", why="Which change is hot is a judgement about the code and the traffic."),
    Item("capacity", "should", "The hosts have headroom (CPU, memory) for the expected traffic",
         why="Expected traffic is a forecast (a launch, a campaign) that no metric holds yet."),
    Item("access-review", "should", "Access to the hosts, the registry and the bucket is "
         "limited to the current team", why="Who should have access is a people decision; "
         "the suite sees keys, not their owners."),
    Item("dns-ttl", "should", "DNS TTLs were lowered ahead of a planned address change",
         why="Whether an address change is planned is a decision, not a record."),
)  # fmt: skip


def automated_items() -> list[Item]:
    return [item for item in ITEMS if item.automated]


# What `inv deploy` checks itself before it changes anything (configuration, then SSH, engine,
# Compose, disk and the lock on each host): the fast subset. The rest is inv preflight's.
CHECKED_BY_DEPLOY = ("config", "engine", "disk")


def skipped_by_deploy() -> list[str]:
    """The automated items a deploy does not run (inv preflight does)."""
    return [item.id for item in automated_items() if item.id not in CHECKED_BY_DEPLOY]


def render_checklist(items: tuple[Item, ...] = ITEMS) -> str:
    """DEPLOYMENT-CHECKLIST.md: each group's items, automated ones with their check, manual
    ones with why no machine checks them."""
    auto = sum(1 for item in items if item.automated)
    lines = [
        "# Deployment checklist",
        "",
        "<!-- Generated from deploysuite/deploy/preflight_items/registry.py by",
        "     `inv preflight.checklist --write`: edit the registry, not this file. -->",
        "",
        f"{len(items)} items: {auto} automated, {len(items) - auto} manual. "
        "`inv preflight --env=<env>` runs every automated item and prints its result, "
        "evidence and fix (docs/deployment/preflight.md); tick the manual ones by hand.",
    ]
    for group, heading in GROUP_TITLES.items():
        lines += ["", f"## {heading}", ""]
        for item in (i for i in items if i.group == group):
            how = f"automated: `{item.check}`" if item.automated else f"manual: {item.why}"
            lines.append(f"- [ ] **{item.id}**: {item.title}. *{how}*")
    return "\n".join(lines) + "\n"
