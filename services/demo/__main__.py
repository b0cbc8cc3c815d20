"""`closedloop demo`: simulate visitors and deals, write the ground truth, play it into the stack."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from services.common.errors import ClosedloopError
from services.common.settings import LOCAL_DIR, ClickHouseSettings, IdentitySettings
from services.demo.ground_truth import (
    EXACT_MODELS,
    expected_credits,
    expected_reports,
    format_report,
    stitched_leads,
)
from services.demo.player import PLAYABLE_CRMS, Endpoints, Player
from services.demo.simulator import (
    GroundTruth,
    SimulationConfig,
    default_end,
    simulate,
    summarize,
)


def _service_defaults() -> Endpoints:
    """Endpoints and secrets from the services' own settings (same env vars), else local defaults."""
    defaults = Endpoints()
    values: dict[str, Any] = {}
    try:
        from services.collector.settings import CollectorSettings  # noqa: PLC0415

        collector = CollectorSettings()
        values["collector_url"] = f"http://{collector.host}:{collector.port}"
    except (ImportError, ValueError):
        pass
    try:
        from services.crm_ingest.settings import CrmIngestSettings  # noqa: PLC0415

        crm = CrmIngestSettings()
        values["crm_ingest_url"] = f"http://{crm.host}:{crm.port}"
        values["generic_secret"] = crm.generic_secret.get_secret_value()
        values["hubspot_secret"] = crm.hubspot_client_secret.get_secret_value()
        values["salesforce_secret"] = crm.salesforce_flow_secret.get_secret_value()
        values["salesforce_organization_id"] = crm.salesforce_organization_ids[0]
        values["salesforce_email_field"] = crm.salesforce_email_field
    except (ImportError, ValueError, AttributeError):
        pass
    return Endpoints(**{**defaults.__dict__, **values})


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of `closedloop demo`."""
    defaults = _service_defaults()
    parser = argparse.ArgumentParser(
        prog="closedloop demo",
        description="Simulate website visitors and CRM deals, write the ground truth, and play "
        "everything into a running stack over its real HTTP endpoints.",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--visitors", type=int, default=1000, help="number of simulated visitors (default 1000)"
    )
    parser.add_argument(
        "--days", type=int, default=70, help="days of simulated history, 7-80 (default 70)"
    )
    parser.add_argument(
        "--end",
        type=datetime.fromisoformat,
        default=None,
        help="end of simulated time, ISO-8601 with offset (default: the last full hour)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="at most this many HTTP requests per second (default 0: as fast as the stack takes)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    parser.add_argument(
        "--batch-size", type=int, default=100, help="events per collector request (max 500)"
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=8,
        help="tries per request on 429/5xx or connection errors before giving up (default 8)",
    )
    parser.add_argument(
        "--crms",
        default="generic,hubspot,salesforce",
        help=f"comma-separated CRMs the deals come from, of {','.join(PLAYABLE_CRMS)} "
        "(default: all three)",
    )
    parser.add_argument("--collector-url", default=defaults.collector_url)
    parser.add_argument("--crm-ingest-url", default=defaults.crm_ingest_url)
    parser.add_argument("--write-key", default=defaults.write_key, help="collector write key")
    parser.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="ground-truth file to write (default .local/demo/ground_truth-<seed>.json)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="write the ground truth, send nothing"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--expected",
        action="store_true",
        help="print the expected report computed from the ground truth",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="after playing, wait until ClickHouse (CLICKHOUSE_* settings) holds the simulation's "
        "touchpoints and credits, then print the closed-loop reports (`closedloop report`)",
    )
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=300,
        help="how long --report waits for the pipeline (default 300)",
    )
    parser.set_defaults(endpoints=defaults)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when every event and webhook was accepted."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ClosedloopError as exc:
        print(f"closedloop demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("closedloop demo: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    if not 1 <= args.batch_size <= 500:
        print("closedloop demo: --batch-size must be between 1 and 500", file=sys.stderr)
        return 2
    crms = tuple(c.strip() for c in args.crms.split(",") if c.strip())
    if not set(crms) <= set(PLAYABLE_CRMS):
        print(f"closedloop demo: --crms must be among {','.join(PLAYABLE_CRMS)}", file=sys.stderr)
        return 2
    config = SimulationConfig(
        end=args.end or default_end(),
        seed=args.seed,
        visitors=args.visitors,
        days=args.days,
        crms=crms,
    )
    simulation = simulate(config)
    truth_path: Path = args.truth or LOCAL_DIR / "demo" / f"ground_truth-{args.seed}.json"
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    truth_path.write_text(json.dumps(simulation.truth.to_json()), encoding="utf-8")
    counts = summarize(simulation)
    print(
        f"simulated {counts['visitors']} visitors ({counts['bots']} bots) from "
        f"{config.start:%Y-%m-%d} to {config.end:%Y-%m-%d %H:%M} UTC: {counts['beacons']} events, "
        f"{counts['identified_people']} people identified, {counts['deals']} deals "
        f"({counts['won_deals']} won), {counts['stage_changes']} stage changes"
    )
    print(f"ground truth written to {truth_path}")
    if args.expected:
        print()
        print(format_report(expected_reports(simulation.truth, IdentitySettings())))
        print()
    if args.dry_run:
        return 0
    base: Endpoints = args.endpoints
    endpoints = Endpoints(
        collector_url=args.collector_url.rstrip("/"),
        crm_ingest_url=args.crm_ingest_url.rstrip("/"),
        write_key=args.write_key,
        generic_secret=base.generic_secret,
        hubspot_secret=base.hubspot_secret,
        salesforce_secret=base.salesforce_secret,
        salesforce_organization_id=base.salesforce_organization_id,
        salesforce_email_field=base.salesforce_email_field,
    )
    player = Player(
        endpoints,
        rate=args.rate,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        attempts=max(1, args.attempts),
    )
    total = counts["beacons"] + counts["stage_changes"]
    with tqdm(
        total=total, unit="msg", disable=args.no_progress, desc="playing", file=sys.stderr
    ) as bar:
        try:
            stats = player.play(simulation, progress=bar.update)
        finally:
            player.close()
    rate = (stats.beacons + stats.webhooks) / stats.seconds if stats.seconds else 0.0
    print(
        f"sent {stats.beacons} events and {stats.webhooks} webhooks in {stats.requests} requests "
        f"({stats.seconds:.1f} s, {rate:.0f} msg/s, {stats.retries} retries, "
        f"{stats.spooled} spooled)"
    )
    if not stats.ok:
        for problem in stats.problems[:10]:
            print(f"  problem: {problem}", file=sys.stderr)
        print(f"closedloop demo: {len(stats.problems)} requests or items failed", file=sys.stderr)
        return 1
    if not args.report:
        print("the pipeline now stitches and attributes them; see `closedloop report`")
        return 0
    return _report(simulation.truth, args.wait_seconds)


def _report(truth: GroundTruth, wait_seconds: float) -> int:
    """Wait until the stack has attributed the simulation, then print the reports."""
    from services.attributor.reports import main as report_main  # noqa: PLC0415
    from services.common.clickhouse import get_client  # noqa: PLC0415

    identity = IdentitySettings()
    touchpoints = len(stitched_leads(truth, identity))
    credits = len(expected_credits(truth, identity))
    print(f"waiting for {touchpoints} touchpoints and {credits} credit rows in ClickHouse ...")
    exact = ", ".join(f"'{m.value}'" for m in EXACT_MODELS)
    deadline = time.monotonic() + wait_seconds
    found = (0, 0)
    while time.monotonic() < deadline:
        try:
            client = get_client(ClickHouseSettings())
            try:
                ((found_touchpoints,),) = client.query(
                    "SELECT count() FROM touchpoints_current"
                ).result_rows
                ((found_credits,),) = client.query(
                    f"SELECT count() FROM attribution_credits_current WHERE model IN ({exact})"
                ).result_rows
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - the warehouse may still be starting
            print(f"  ClickHouse not answering yet: {str(exc).splitlines()[0][:120]}")
            time.sleep(2)
            continue
        found = (int(found_touchpoints), int(found_credits))
        if found[0] >= touchpoints and found[1] >= credits:
            break
        time.sleep(1)
    else:
        print(
            f"closedloop demo: after {wait_seconds:.0f} s ClickHouse holds {found[0]} touchpoints "
            f"and {found[1]} credit rows of the {touchpoints} and {credits} expected",
            file=sys.stderr,
        )
        return 1
    for argv in (["leads"], ["revenue"], ["pipeline"]):
        print(f"\n$ closedloop report {' '.join(argv)}")
        code = report_main([*argv, "--writer"])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
