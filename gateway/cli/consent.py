"""`conduct-gateway case consent`: record, limit in time and withdraw a person's written consent.

A consent lets one reporter or witness be named to one recipient. It can carry an expiry date and be
withdrawn; from the next message on, an expired or withdrawn consent lifts nothing. Every change is
audited (code names, the consent's key and dates: never the person's identity, the recipient or the
reference, which may name them).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import click
from pydantic import ValidationError

from gateway.cli import config_option
from gateway.cli.auditing import record_case_action
from gateway.cli.case import _RegistryEdit, _replace, _validation_problem
from gateway.errors import GatewayError
from gateway.policy.config import Case, ConsentRecord
from gateway.policy.model import Consent
from gateway.settings import load_settings

_DATE = click.DateTime(formats=["%Y-%m-%d"])


def consent_key(case: Case, record: ConsentRecord) -> str:
    """The key audit entries name this consent by (see ``gateway.policy.model.Consent.key``)."""
    return Consent(
        case.code, record.person, record.recipient.lower(), record.reference, record.date.isoformat()
    ).key


@click.command("consent")
@click.argument("code", metavar="CASE")
@click.argument("person", metavar="PERSON")
@click.option("--recipient", required=True, metavar="ADDR", help="The one address they may be named to.")
@click.option("--reference", metavar="TEXT", help="Where the written permission is kept (to record one).")
@click.option("--date", "given_on", type=_DATE, help="When it was given, YYYY-MM-DD (to record one).")
@click.option("--expires", type=_DATE, help="From this date (YYYY-MM-DD) it no longer applies.")
@click.option(
    "--withdraw",
    is_flag=True,
    help="Withdraw PERSON's consents for this recipient instead of recording one (from the next message on).",
)
@click.option(
    "--withdrawn-on", type=_DATE, help="With --withdraw: the date of the withdrawal (default: today, UTC)."
)
@config_option
def consent(
    code: str,
    person: str,
    recipient: str,
    reference: str | None,
    given_on: datetime.datetime | None,
    expires: datetime.datetime | None,
    withdraw: bool,
    withdrawn_on: datetime.datetime | None,
    config_path: Path | None,
) -> None:
    """Record PERSON's written permission to be named to one recipient (PERSON: their code name),
    optionally until --expires; or, with --withdraw, record that they took it back.

    A running gateway picks the change up within seconds. Messages that rely on a consent are
    audited with its key and date.
    """
    edit = _RegistryEdit(load_settings(config_path))
    person = person.strip().lower()
    wanted = recipient.strip().lower()
    if withdraw and (reference or given_on or expires):
        raise GatewayError("--withdraw takes no --reference, --date or --expires")
    if not withdraw and (reference is None or given_on is None):
        raise GatewayError("to record a consent give --reference and --date (or --withdraw to withdraw one)")
    today = datetime.datetime.now(datetime.UTC).date()
    done: list[tuple[str, str]] = []  # (case code, consent key)

    def change(cases: list[Case]) -> None:
        index = edit.find(cases, code)
        item = cases[index]
        if withdraw:
            on = withdrawn_on.date() if withdrawn_on is not None else today
            records = []
            for record in item.consents:
                if (
                    record.person == person
                    and record.recipient.lower() == wanted
                    and record.withdrawn is None
                ):
                    done.append((item.code, consent_key(item, record)))
                    record = _withdrawn(record, on)
                records.append(record.model_dump())
            if not done:
                raise GatewayError(
                    f"case {item.code!r} has no consent of {person} for that recipient still in force"
                )
            cases[index] = _replace(item, consents=tuple(records))
            return
        assert reference is not None and given_on is not None
        try:
            record = ConsentRecord(
                person=person,
                recipient=recipient,
                reference=reference,
                date=given_on.date(),
                expires=expires.date() if expires is not None else None,
            )
        except ValidationError as exc:
            raise _validation_problem(exc, "the consent") from None
        cases[index] = _replace(item, consents=(*item.consents, record.model_dump()))
        done.append((item.code, consent_key(item, record)))

    edit.apply(change)
    case_code = done[0][0]
    keys = [key for _code, key in done]
    if withdraw:
        on = (withdrawn_on.date() if withdrawn_on is not None else today).isoformat()
        record_case_action(
            edit.settings, "consent-withdrawn", case_code, person=person, consents=list(keys), withdrawn=on
        )
        click.echo(
            f"Withdrew {len(keys)} consent(s) of {person} in case {case_code} ({', '.join(keys)}), "
            f"as of {on}: from the next message on they lift nothing."
        )
        return
    details: dict[str, str] = {"person": person, "consent": keys[0]}
    if expires is not None:
        details["expires"] = expires.date().isoformat()
    record_case_action(edit.settings, "consent", case_code, **details)
    until = f", until {expires.date().isoformat()}" if expires is not None else ""
    click.echo(f"Recorded consent {keys[0]} of {person} in case {case_code} for one recipient{until}.")


def _withdrawn(record: ConsentRecord, on: datetime.date) -> ConsentRecord:
    try:
        return ConsentRecord.model_validate({**record.model_dump(), "withdrawn": max(on, record.date)})
    except ValidationError as exc:
        raise _validation_problem(exc, "the consent") from None
