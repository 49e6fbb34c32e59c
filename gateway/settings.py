"""Deployment settings (config/gateway.yaml): pydantic models, environment overrides, path resolution."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    NonNegativeFloat,
    PositiveInt,
    model_validator,
)
from pydantic import (
    EmailStr as EmailStr,
)

from gateway.crash_points import PATTERN as CRASH_POINT_PATTERN
from gateway.errors import ConfigError
from gateway.logs import LogFormat
from gateway.settings_base import ENV_PREFIX as ENV_PREFIX
from gateway.settings_base import Port as Port
from gateway.settings_base import Retention as Retention
from gateway.settings_base import Seconds as Seconds
from gateway.settings_base import Section as Section
from gateway.settings_base import parse_duration as parse_duration
from gateway.state_settings import PostgresqlSettings as PostgresqlSettings
from gateway.state_settings import StateSettings
from gateway.submission_settings import AuthSettings as AuthSettings
from gateway.submission_settings import LimitsSettings as LimitsSettings
from gateway.submission_settings import ListenerSettings as ListenerSettings
from gateway.submission_settings import ServerSettings as ServerSettings
from gateway.submission_settings import TlsSettings as TlsSettings
from gateway.yamlsource import LoadedYaml, load_yaml_file, set_path, validate_yaml

ENV_NESTING = "__"
DEFAULT_CONFIG = Path("config/gateway.yaml")
SYSTEM_CONFIG = Path("/etc/conduct-gateway/gateway.yaml")
CONFIG_VARIABLE = "CONDUCT_GATEWAY_CONFIG"


class UpstreamSettings(Section):
    """The organisation's real mail server."""

    host: str = Field(description="Host name or address of the upstream server.")
    port: Port = Field(25, description="TCP port.")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (required), tls (implicit), or none (plain; trusted networks only)."
    )
    verify_certificates: bool = Field(True, description="Check the upstream's certificate.")
    ca_file: Path | None = Field(None, description="Extra CA bundle for the upstream certificate.")
    username: str | None = Field(None, description="AUTH user name, if the upstream wants one.")
    password_env: str | None = Field(
        None, description="Name of the environment variable holding the upstream password."
    )
    password_file: Path | None = Field(None, description="File holding the upstream password.")
    timeout: Seconds = Field(
        300.0,
        description=(
            "Wait for the connection, the greeting, EHLO, STARTTLS, AUTH and the reply to each command "
            "(RFC 5321 §4.5.3.2: 5 minutes)."
        ),
    )
    data_timeout: Seconds = Field(
        120.0, description="Wait for the 354 reply to DATA (RFC 5321 §4.5.3.2.4: 2 minutes)."
    )
    final_reply_timeout: Seconds = Field(
        600.0,
        description=(
            "Wait for the reply to the final dot, plus one second per 100 KB for sending the message "
            "(RFC 5321 §4.5.3.2.6: 10 minutes; a shorter wait makes a slow upstream get duplicates)."
        ),
    )
    pipelining: bool = Field(
        True,
        description=(
            "Send MAIL, RCPT and DATA in one write when the server offers PIPELINING (RFC 2920); "
            "false waits for each reply (for a server that mishandles it)."
        ),
    )


class DeliverySettings(Section):
    """How accepted mail leaves the spool."""

    upstream: UpstreamSettings | None = Field(
        None, description="Relay here. Without it, mail is delivered to the local maildir."
    )
    maildir: Path = Field(Path("maildir"), description="Embedded default: Maildir (relative to state_dir).")
    concurrency: PositiveInt = Field(8, description="Messages delivered at once.")
    retry_lifetime: Seconds = Field(5 * 86400.0, description="Give up and bounce after this long.")
    initial_backoff: Seconds = Field(60.0, description="Wait before the first retry...")
    max_backoff: Seconds = Field(3600.0, description="...doubling up to this wait.")
    poll_interval: Seconds = Field(1.0, description="How often deferred mail is looked at.")
    own_process: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "Deliver from a process of its own, so the SMTP event loop does not also relay: `auto` does "
            "when the machine has three CPU cores or more (on two, the loop and a policy worker use them)."
        ),
    )
    done_retention: Retention = Field(
        86400.0, description="Keep delivered messages in spool/done/ this long, then delete them (0: soon)."
    )
    bounced_retention: Retention = Field(
        7 * 86400.0, description="Keep messages that bounced in spool/bounced/ this long, then delete them."
    )


class MetricsSettings(Section):
    """Prometheus /metrics and /healthz on a separate port."""

    enabled: bool = Field(True, description="Serve /metrics and /healthz.")
    host: str = Field("127.0.0.1", description="Address (keep it on loopback).")
    port: Port = Field(9587, description="TCP port.")


class PolicySettings(Section):
    """The policy file admins edit."""

    path: Path = Field(Path("../policies/default.yaml"), description="Policy YAML file.")
    workers: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] = Field(
        "auto",
        description=(
            "Processes that parse and evaluate messages, so the SMTP event loop does not: `auto` is one "
            "per CPU core beyond the first, at least 2 (so one slow message never holds up the others) "
            "and at most 4; 0 evaluates in the gateway process (no evaluation budget then)."
        ),
    )
    shadow: Path | None = Field(
        None,
        description=(
            "A candidate policy file evaluated on every message alongside the one in force; it acts on "
            "nothing: each verdict it would change is recorded in the audit trail and /metrics "
            "(`shadow-difference`). Omitted: no shadow policy."
        ),
    )
    evaluation_budget: Seconds = Field(
        30.0,
        description=(
            "CPU time one message may take to be checked (parse, rules, rewrite) in a policy worker. "
            "A message that needs more is refused for good (552 5.3.4, too complex to check): it "
            "would need as much on every retry. A worker that is still busy after twice this plus 30 "
            "seconds of wall-clock time is stuck and killed; its message is deferred (451)."
        ),
    )


class ReviewSettings(Section):
    """Second-member review of held messages, and the notices the gateway sends senders."""

    enabled: bool = Field(
        True, description="Keep held messages for review. When false, `hold` refuses like `reject`."
    )
    address_domain: str | None = Field(
        None,
        description=(
            "Domain of the review reply addresses (review+TOKEN@domain). Default: the conduct "
            "address's domain. Mail to these addresses is consumed by the gateway, never relayed."
        ),
    )
    local_part: str = Field(
        "review",
        pattern=r"^[a-z][a-z0-9.-]{0,30}$",
        description="Local part before the + of reply addresses.",
    )
    expiry: Seconds = Field(
        72 * 3600.0, description="A held message nobody decided on expires after this long."
    )
    check_interval: Seconds = Field(
        60.0, description="How often the running gateway looks for expired holds."
    )
    reminders: bool = Field(
        True,
        description=(
            "Remind the eligible reviewers (never the sender) once before a hold nobody decided expires."
        ),
    )
    reminder_before: Seconds | None = Field(
        None, description="How long before expiry the reminder goes out. Default: a quarter of `expiry`."
    )
    notices_per_hour: PositiveInt = Field(
        20, description="Per sender: held/warning notices beyond this many an hour are collapsed into one."
    )
    refusal_notices: bool = Field(
        True,
        description=(
            "Mail a sender whose message the policy refused a short notice saying what to fix (besides "
            "the 550); never to the null sender or for an auto-submitted message."
        ),
    )
    decided_retention: Retention = Field(
        7 * 86400.0,
        description=(
            "Delete a decided hold (released, rejected, cancelled, expired) and its message bytes this "
            "long after the decision; the audit trail keeps the record."
        ),
    )


def _client_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"not an IP address or network: {value!r} (e.g. 192.0.2.0/24)") from None


class DigestSettings(Section):
    """The committee digest: counts of what the gateway did, mailed once per period (no content)."""

    period: Literal["off", "daily", "weekly"] = Field(
        "weekly",
        description=(
            "`daily` (each UTC day, sent after midnight UTC), `weekly` (Monday to Sunday, sent on "
            "Monday after midnight UTC) or `off`."
        ),
    )
    to: tuple[str, ...] = Field(
        (),
        description="Committee addresses to send it to (default: the conduct address). Members only.",
    )


class OverridesSettings(Section):
    """Overrides of `overridable` rules: how long their records are kept."""

    retention: Retention = Field(
        90 * 86400.0,
        description="Delete an override and its justification this long after it was made (the audit trail "
        "keeps its reference); never sooner than the policy's longest `override_quota` period, which counts "
        "them. Expired override tokens, used or not, go at once.",
    )


class JournalSettings(Section):
    """Journal intake: copies of inbound committee mail from the organisation's mail server.

    The gateway learns reporters' and witnesses' own words (as fingerprints) and thread participants
    from them; it never relays or keeps the copies.
    """

    enabled: bool = Field(False, description="Start the journal listener.")
    host: str = Field("127.0.0.1", description="Address to listen on (the mail server must reach it).")
    port: Port = Field(2526, description="TCP port (plain SMTP, no AUTH: restrict it by client address).")
    allowed_clients: tuple[Annotated[str, AfterValidator(_client_network)], ...] = Field(
        ("127.0.0.1/32", "::1/128"),
        description="Addresses or networks allowed to send journal copies; everyone else gets 550 5.7.1.",
    )
    max_message_size: PositiveInt = Field(25 * 1024 * 1024, description="Bytes (SIZE).")


class RegistrySettings(Section):
    """The case registry: cases and the identities they protect, encrypted at rest, apart from the policy."""

    path: Path | None = Field(
        None, description="Registry file (default: <state_dir>/registry/cases.registry, 0600)."
    )
    key_env: str | None = Field(
        "CONDUCT_REGISTRY_KEY",
        description="Environment variable holding the key (32 random bytes in base64); used when set.",
    )
    key_file: Path | None = Field(
        None,
        description=(
            "File holding the key, used when the variable is not set. Neither: <state_dir>/registry/"
            "registry.key, made at first use (keep production keys elsewhere)."
        ),
    )


class LoggingSettings(Section):
    """How log lines are written (the threshold is `log_level`)."""

    format: LogFormat = Field(
        "text",
        description=(
            "`text`: one `time level logger event=... key=value` line per event; `json`: one JSON object "
            "per line (`time`, `level`, `logger`, `event` and its fields) for log collectors."
        ),
    )


class MilterSettings(Section):
    """Milter mode (`conduct-gateway milter`): the policy inside an existing Postfix or Sendmail."""

    listen: str = Field(
        "inet:8895@127.0.0.1",
        pattern=r"^(inet6?:.+|unix:.+)$",
        description=(
            "Where the milter listens, as Postfix's `smtpd_milters` names it: `inet:PORT@HOST` or "
            "`unix:PATH` (a unix socket inside Postfix's chroot when smtpd is chrooted)."
        ),
    )
    unauthenticated: Literal["pass", "screen"] = Field(
        "pass",
        description=(
            "Mail without an authenticated sender (no `{auth_authen}`): `pass` delivers it untouched "
            "unless its envelope sender is a committee member's address (then it is judged as theirs); "
            "`screen` judges every message as its envelope sender."
        ),
    )
    on_failure: Literal["tempfail", "accept"] = Field(
        "tempfail",
        description=(
            "When the milter cannot decide (an internal error, `decision_timeout`): `tempfail` has the "
            "MTA tell the client to retry (nothing passes unscreened); `accept` delivers unscreened."
        ),
    )
    decision_timeout: Seconds = Field(
        240.0,
        description="Longest wait for one decision; keep it below Postfix's `milter_content_timeout` (300s).",
    )
    idle_timeout: Seconds = Field(
        3600.0, description="Close an MTA connection that sends nothing for this long."
    )
    postsuper: tuple[str, ...] = Field(
        ("postsuper",),
        min_length=1,
        description=(
            "The command that releases (`-H`) and deletes (`-d`) held messages in Postfix's hold queue; "
            "it must run as root or the mail system owner, e.g. `[sudo, -n, /usr/sbin/postsuper]`."
        ),
    )
    postfix_config_directory: Path | None = Field(
        None,
        description="Postfix's configuration directory, passed as `postsuper -c` (default: Postfix's own).",
    )


class GatewaySettings(Section):
    """config/gateway.yaml. Relative paths are relative to the file's own folder."""

    state_dir: Path = Field(Path("../state"), description="Spool, ledger, audit trail, TLS, maildir.")
    state: StateSettings = StateSettings()
    server: ServerSettings = ServerSettings()
    tls: TlsSettings = TlsSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    delivery: DeliverySettings = DeliverySettings()
    metrics: MetricsSettings = MetricsSettings()
    policy: PolicySettings = PolicySettings()
    review: ReviewSettings = ReviewSettings()
    journal: JournalSettings = JournalSettings()
    digest: DigestSettings = DigestSettings()
    overrides: OverridesSettings = OverridesSettings()
    registry: RegistrySettings = RegistrySettings()
    milter: MilterSettings = MilterSettings()
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Logging threshold.")
    logging: LoggingSettings = LoggingSettings()
    shutdown_grace: NonNegativeFloat = Field(
        30.0, description="Seconds to let in-flight transactions finish on SIGTERM."
    )
    fault_injection: bool = Field(
        False, description="Honour `crash_at`. For fault tests only: never in production."
    )
    crash_at: str | None = Field(
        None,
        pattern=CRASH_POINT_PATTERN,
        description=(
            "Fault tests: exit at once, as after kill -9, when delivery reaches this point "
            "(`after-upstream-250`: the upstream took a message whose result is not recorded yet; "
            "`after-upstream-250@N`: the Nth time). Needs `fault_injection: true`."
        ),
    )

    @model_validator(mode="after")
    def _crash_only_when_testing(self) -> GatewaySettings:
        if self.crash_at is not None and not self.fault_injection:
            raise ValueError("crash_at is for fault tests: it needs fault_injection: true as well")
        return self

    def resolve(self, base: Path) -> GatewaySettings:
        """Make every relative path absolute against ``base`` (the config file's folder)."""

        def fix(path: Path) -> Path:
            return path if path.is_absolute() else (base / path).resolve()

        state = fix(self.state_dir)
        upstream = self.delivery.upstream
        if upstream is not None:
            upstream = upstream.model_copy(
                update={
                    "ca_file": fix(upstream.ca_file) if upstream.ca_file else None,
                    "password_file": fix(upstream.password_file) if upstream.password_file else None,
                }
            )
        maildir = self.delivery.maildir
        postgresql = self.state.postgresql
        if postgresql.password_file is not None:
            postgresql = postgresql.model_copy(update={"password_file": fix(postgresql.password_file)})
        return self.model_copy(
            update={
                "state_dir": state,
                "state": self.state.model_copy(update={"postgresql": postgresql}),
                "tls": self.tls.model_copy(
                    update={
                        "cert_file": fix(self.tls.cert_file) if self.tls.cert_file else None,
                        "key_file": fix(self.tls.key_file) if self.tls.key_file else None,
                    }
                ),
                "auth": self.auth.model_copy(update={"users_file": fix(self.auth.users_file)}),
                "delivery": self.delivery.model_copy(
                    update={
                        "upstream": upstream,
                        "maildir": maildir if maildir.is_absolute() else state / maildir,
                    }
                ),
                "policy": self.policy.model_copy(
                    update={
                        "path": fix(self.policy.path),
                        "shadow": fix(self.policy.shadow) if self.policy.shadow else None,
                    }
                ),
                "registry": self.registry.model_copy(
                    update={
                        "path": fix(self.registry.path) if self.registry.path else None,
                        "key_file": fix(self.registry.key_file) if self.registry.key_file else None,
                    }
                ),
            }
        )


def apply_environment(loaded: LoadedYaml, environ: Mapping[str, str]) -> None:
    """Overlay ``CONDUCT_GATEWAY_<SECTION>__<KEY>=value`` variables onto the loaded file."""
    if loaded.data is None:
        loaded.data = {}
    if not isinstance(loaded.data, dict):
        raise ConfigError(f"{loaded.path}: the file must be a mapping of sections")
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_VARIABLE:
            continue
        loc = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_NESTING))
        if not all(loc):
            raise ConfigError(f"environment variable {name}: empty key part")
        value: Any = environ[name]
        # Not "none": it is a real value (delivery.upstream.security: none).
        if value.lower() in ("null", "~"):
            value = None
        set_path(loaded.data, loc, value)
        loaded.overrides[loc] = f"environment variable {name}"


def find_config(
    path: Path | None = None, environ: Mapping[str, str] | None = None, system: Path = SYSTEM_CONFIG
) -> Path:
    """The settings file to use: ``--config``, else ``$CONDUCT_GATEWAY_CONFIG``, else the first that exists
    of ``./config/gateway.yaml`` and ``/etc/conduct-gateway/gateway.yaml``.

    A file named explicitly (option or variable) is used as given, so a typo is reported as that file
    missing. When nothing was named and neither default exists, the error lists what was tried.
    """
    env = os.environ if environ is None else environ
    if path is not None:
        return path
    if env.get(CONFIG_VARIABLE):
        return Path(env[CONFIG_VARIABLE])
    for candidate in (DEFAULT_CONFIG, system):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no settings file found: tried --config (not given), ${CONFIG_VARIABLE} (not set), "
        f"{DEFAULT_CONFIG} (relative to {Path.cwd()}) and {system}. Run the command from the folder that "
        f"holds config/gateway.yaml, or name the file with --config PATH or {CONFIG_VARIABLE}=PATH."
    )


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> GatewaySettings:
    """Find (see :func:`find_config`), read, override from the environment, validate and resolve."""
    env = os.environ if environ is None else environ
    chosen = find_config(path, env)
    loaded = load_yaml_file(chosen)
    apply_environment(loaded, env)
    settings = validate_yaml(GatewaySettings, loaded)
    return settings.resolve(chosen.resolve().parent)
