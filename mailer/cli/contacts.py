"""`mailer import` and `mailer sample-data`: organizations and contacts in bulk."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from mailer.cli._common import acting_option, current_actor, echo_json, json_option, runtime
from mailer.contacts import sample
from mailer.contacts.importer import ImportReport, Progress, import_contacts
from mailer.errors import ContactImportError

#: Below this many rows a progress bar only flickers.
PROGRESS_MIN_ROWS = 5000


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    from rich.progress import Progress as RichProgress

    with RichProgress(transient=True) as bar:
        tasks: dict[str, object] = {}

        def update(stage: str, done: int, total: int) -> None:
            if total < PROGRESS_MIN_ROWS:
                return
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

        yield update


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and count, write nothing.")
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Import the good rows; write the bad ones with a reason column to --rejects.",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where --skip-invalid writes rejected rows [default: FILE's name + .rejected.csv].",
)
@click.option(
    "--check-deliverability", is_flag=True, help="Look up each email domain in DNS (slow)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@acting_option
def import_command(
    file: Path,
    dry_run: bool,
    skip_invalid: bool,
    rejects: Path | None,
    check_deliverability: bool,
    as_json: bool,
    as_username: str,
) -> None:
    """Import organizations and their contacts from a CSV file (UTF-8, header on line 1).

    One row per contact, with its organization's columns. Required: external_id, kind
    (client|prospect), organization_name, email. Optional: industry, benefit_eligible_employees,
    street, city, state (USPS code), postal_code, country (ISO, default US), account_manager,
    agreement_started_on, agreement_ended_on (YYYY-MM-DD), tags (separated by ';'), first_name,
    last_name, title, is_primary (true/false), status (active|inactive).

    account_manager is the username of a user with role account_manager. If it does not exist,
    either create it first (`mailer users create NAME --role account_manager ...`) or give the
    columns account_manager_name and account_manager_email (and account_manager_phone) and the
    import creates it.

    Admins import any row. An account manager imports only their own clients: rows naming
    another manager, prospects, organizations managed by someone else and addresses of other
    organizations' contacts are refused with their row and column. Marketing cannot import.

    Organizations match on external_id, contacts on email: importing the same file again
    changes nothing. By default one bad row imports nothing and every bad row is listed. Files
    with employee information (SSN, salary, date of birth, dependents ...) are refused.
    """
    rt = runtime()
    who = current_actor(as_username)
    show_bar = sys.stdout.isatty() and not as_json
    try:
        with _progress_bar(show_bar) as progress:
            report = import_contacts(
                rt,
                file,
                dry_run=dry_run,
                skip_invalid=skip_invalid,
                rejects_path=rejects,
                check_deliverability=check_deliverability,
                actor=who,
                progress=progress,
            )
    except ContactImportError as exc:
        if not as_json:  # with --json the CLI's error handler prints the problems
            for problem in exc.problems:
                click.echo(str(problem), err=True)
        raise
    if as_json:
        echo_json(report.as_dict())
    else:
        _print_report(report)


def _print_report(report: ImportReport) -> None:
    verb = "would import (dry run, nothing written)" if report.is_dry_run else "imported"
    of = f" of {report.rows}" if report.rejected else ""
    click.echo(f"{report.path}: {verb} {report.imported}{of} rows")
    click.echo(
        f"  organizations: {report.organizations_created} created, "
        f"{report.organizations_updated} updated, {report.organizations_unchanged} unchanged"
    )
    click.echo(
        f"  contacts:      {report.contacts_created} created, "
        f"{report.contacts_updated} updated, {report.contacts_unchanged} unchanged"
    )
    if report.users_created:
        click.echo(f"  account managers created: {report.users_created}")
    if report.rejected:
        where = (
            f"written to {report.rejects_path}" if report.rejects_path else "not written (dry run)"
        )
        click.echo(f"  rejected: {report.rejected} rows, {where}")
        for problem in report.problems:
            click.echo(f"    {problem}", err=True)


@click.command("sample-data")
@click.option("--organizations", type=click.IntRange(min=1), required=True, help="How many.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same data.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--into-db", is_flag=True, help="Write straight into the database (bulk).")
@click.option(
    "--contacts-per-org",
    default="1-5",
    show_default=True,
    help="Contacts per organization, as MIN-MAX.",
)
@click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The day agreements are dated from [default: today]; fix it for identical output.",
)
@json_option
def sample_data_command(
    organizations: int,
    seed: int,
    csv_path: Path | None,
    into_db: bool,
    contacts_per_org: str,
    as_of: dt.datetime | None,
    as_json: bool,
) -> None:
    """Generate realistic fake clients and prospects (addresses only at .example domains).

    Give --csv FILE to write a file for `mailer import`, or --into-db to load the database.
    """
    if bool(csv_path) == into_db:
        raise click.UsageError("give exactly one of --csv FILE or --into-db")
    low, _, high = contacts_per_org.partition("-")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        raise click.BadParameter("use MIN-MAX, e.g. 1-5", param_hint="--contacts-per-org") from None
    if not 1 <= bounds[0] <= bounds[1] <= 5:
        raise click.BadParameter("must be within 1-5", param_hint="--contacts-per-org")
    today = as_of.date() if as_of else None
    if csv_path:
        counts = sample.write_sample_csv(
            csv_path, organizations, seed, contacts_per_org=bounds, today=today
        )
        if as_json:
            echo_json({"csv": str(csv_path), **counts})
            return
        click.echo(f"wrote {csv_path}: {counts['organizations']} organizations, "
                   f"{counts['contacts']} contacts")  # fmt: skip
        return
    rt = runtime()
    with _progress_bar(sys.stdout.isatty() and not as_json) as progress:
        counts = sample.load_sample_into_db(
            rt,
            organizations,
            seed,
            current_actor(),
            contacts_per_org=bounds,
            today=today,
            progress=(lambda done, total: progress("loading", done, total)) if progress else None,
        )
    if as_json:
        echo_json(counts)
        return
    click.echo(
        f"loaded {counts['organizations']} organizations, {counts['contacts']} contacts "
        f"({counts['users_created']} account managers created) in {counts['seconds']:.1f} s"
    )


COMMANDS = [import_command, sample_data_command]
