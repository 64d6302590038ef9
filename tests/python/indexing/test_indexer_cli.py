"""`tandem indexer` as an operator runs it: a backfill killed with SIGKILL and restarted ends
with the same tables as a build from scratch, and bad settings, an unreachable node or database
end with one `error:` line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from pprint import pformat

import psutil
import pytest
import requests
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from indexer.service import index_to_head
from tandem import chain
from tandem.config import Settings
from tandem.db import models, open_engine, upgrade
from tandem.node import LocalNode, free_port
from tandem.protocol import Deployment, deploy_local

from .support import (
    address,
    differences,
    fresh_postgres,
    indexer_env,
    indexer_settings,
    open_vault,
    play,
    rpc,
    save_book,
    tables,
    tandem,
)


def cursor_of(url: str) -> int | None:
    """The indexer's cursor as another process sees it (None before it has one)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            table = models.indexer_cursor.cursor
            return conn.execute(select(table.c.block_number)).scalar()
    except (OperationalError, ProgrammingError):  # no file or no tables yet
        return None
    finally:
        engine.dispose()


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def scrape(port: int) -> str:
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:
        return ""


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


def start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tandem.cli", "indexer", "run"],
        env=indexer_env(settings),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def children(run: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The processes ``run`` started (on PostgreSQL, its writer), seen while it runs."""
    return psutil.Process(run.pid).children(recursive=True)


def gone(processes: list[psutil.Process]) -> bool:
    try:
        return all(p.status() == psutil.STATUS_ZOMBIE for p in processes if p.is_running())
    except psutil.NoSuchProcess:  # ended meanwhile: asked again
        return False


def is_writer(process: psutil.Process) -> bool:
    """A writer process (not multiprocessing's resource tracker, started beside the first)."""
    try:
        return "resource_tracker" not in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_backfill_killed_with_sigkill_and_restarted_equals_a_build_from_scratch(
    settings: Settings, tmp_path: Path, empty_url: str
) -> None:
    with LocalNode(settings=settings) as node:
        w3 = chain.connect(node.rpc_url, settings=settings)
        dep = deploy_local(w3, settings=settings, save=False)
        # A long history to read: 3,000 quiet blocks, then a vault's life.
        for _ in range(6):  # in parts: one call for all of them can outlast the RPC timeout
            rpc(w3, "anvil_mine", hex(500))
        play(dep, open_vault(dep, "killed"))
        head = w3.eth.block_number
        ix = indexer_settings(
            settings,
            node.rpc_url,
            tmp_path,
            hub=dep.hub.address,
            max_log_range=5,
            database_url=empty_url,
        )
        url = ix.indexer.database_url
        log = tmp_path / "indexer.log"
        # Killed twice on the way, each time with no warning, then started again.
        killed_at: list[int | None] = []
        for beyond in (500, 1_500):
            run = start(ix, log)
            try:
                wait_for(
                    lambda b=beyond: (cursor_of(url) or 0) > b, 60, f"the cursor past {beyond}"
                )
                started = children(run)
                run.send_signal(signal.SIGKILL)
                run.wait(10)
                # On PostgreSQL its writer was storing ranges: it stops too, on its own.
                assert bool(started) == empty_url.startswith("postgresql"), started
                wait_for(lambda p=started: gone(p), 10, "the writer to stop")
            finally:
                run.kill()
            killed_at.append(cursor_of(url))
        assert killed_at[0] is not None and killed_at[1] is not None, killed_at
        assert 500 < killed_at[0] < killed_at[1] < head - 100, killed_at
        port = free_port()
        watched = ix.model_copy(
            update={"indexer": ix.indexer.model_copy(update={"metrics_port": port})}
        )
        second = start(watched, log)
        try:
            wait_for(lambda: cursor_of(url) == head, 60, "the restarted indexer to reach the head")
            # What Prometheus scrapes: the head, no lag, the events read since the restart.
            wait_for(lambda: "lag_blocks 0.0" in scrape(port), 20, "the metrics")
            metrics = scrape(port)
            assert f"tandem_indexer_head_block {float(head)}" in metrics
            assert metric(metrics, "tandem_indexer_events_total") > 0
            assert metric(metrics, "tandem_indexer_rows_total") > 0
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0, log.read_text()
        finally:
            second.kill()
        scratch = ix.model_copy(
            update={
                "indexer": ix.indexer.model_copy(
                    update={"database_url": f"sqlite:///{tmp_path / 'scratch.db'}"}
                )
            }
        )
        assert index_to_head(scratch) == head
        live_engine, scratch_engine = open_engine(url), open_engine(scratch.indexer.database_url)
        try:
            live, fresh = tables(live_engine), tables(scratch_engine)
            assert len(live["trades"]) == 2 and len(live["exits"]) == 3
            found = differences(live, fresh)
            assert not found, pformat(found, width=100)
        finally:
            live_engine.dispose()
            scratch_engine.dispose()


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture
def ix(dep: Deployment, settings: Settings, tmp_path: Path) -> Settings:
    rpc_url = dep.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    ix = indexer_settings(settings, rpc_url, tmp_path, hub=dep.hub.address)
    save_book(dep, ix)
    return ix


def test_bad_settings_end_with_one_error_line(ix: Settings) -> None:
    too_deep = ix.model_copy(
        update={"indexer": ix.indexer.model_copy(update={"finality_depth": 500})}
    )
    line = one_error_line(tandem(too_deep, "indexer", "run"))
    assert "indexer.finality_depth" in line
    line = one_error_line(tandem(ix, "indexer", "run", "--finality-depth", "-1"))
    assert "--finality-depth" in line


def test_an_unreachable_node_ends_with_one_error_line(ix: Settings) -> None:
    dead = ix.model_copy(update={"rpc_url": f"http://127.0.0.1:{free_port()}"})
    line = one_error_line(tandem(dead, "indexer", "run"))
    assert "no node answers" in line


def test_an_unreachable_database_ends_with_one_error_line(ix: Settings, tmp_path: Path) -> None:
    closed = f"postgresql://indexer@127.0.0.1:{free_port()}/tandem"
    line = one_error_line(tandem(ix, "indexer", "run", "--database-url", closed))
    assert "cannot open the indexer database" in line and "indexer.database_url" in line
    line = one_error_line(tandem(ix, "indexer", "status"))
    assert "no indexer database" in line


def test_reindex_builds_from_scratch_and_status_reads_it(ix: Settings, dep: Deployment) -> None:
    open_vault(dep, "reindexed", followers=1)
    done = tandem(ix, "indexer", "reindex")
    assert done.returncode == 0, done.stderr
    assert f"Indexed up to block {dep.w3.eth.block_number}" in done.stdout
    done = tandem(ix, "indexer", "status")
    assert done.returncode == 0, done.stderr
    assert f"Cursor   {dep.w3.eth.block_number}" in done.stdout
    assert f"Final    up to block {dep.w3.eth.block_number - 2}" in done.stdout


def test_sighup_reads_the_ranking_rules_again_and_reranks_every_master(
    ix: Settings, dep: Deployment, tmp_path: Path
) -> None:
    """A running indexer ranks by the rules of its settings file; after the file changes, a
    SIGHUP re-ranks every master by the new rules, without a restart or a new block. A file
    that no longer reads keeps the rules in force, and the indexer running."""
    play(dep, open_vault(dep, "reranked"))
    master = address("reranked:master")
    config = tmp_path / "tandem.toml"
    config.write_text("[rankings]\nmin_history_days = 30\n")
    url = ix.indexer.database_url
    head = dep.w3.eth.block_number

    def ranked() -> set[bool]:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                t = models.MasterRanking.__table__
                query = select(t.c.ranked).where(t.c.master == master)
                return set(conn.execute(query).scalars())
        except OperationalError:
            return set()
        finally:
            engine.dispose()

    log = tmp_path / "indexer.log"
    env = {**indexer_env(ix), "TANDEM_CONFIG": str(config)}
    run = subprocess.Popen(
        [sys.executable, "-m", "tandem.cli", "indexer", "run"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: cursor_of(url) == head and ranked(), 60, "the first rankings")
        assert ranked() == {False}, "a master of minutes is not ranked under a 30-day rule"

        config.write_text("[rankings]\nmin_history_days = 0\nmin_trades = 0\nmin_equity_usd = 0\n")
        run.send_signal(signal.SIGHUP)
        wait_for(lambda: ranked() == {True}, 30, "every window ranked under the new rules")
        assert dep.w3.eth.block_number == head, "no block was needed"

        config.write_text("[rankings]\nmin_history_days = 'soon'\n")
        run.send_signal(signal.SIGHUP)
        wait_for(lambda: "settings not reloaded" in log.read_text(), 20, "the warning")
        assert run.poll() is None and ranked() == {True}, log.read_text()
        run.send_signal(signal.SIGTERM)
        assert run.wait(20) == 0, log.read_text()
    finally:
        run.kill()


@pytest.fixture
def on_postgres(ix: Settings, postgres: str, tmp_path: Path) -> Settings:
    """``ix`` on a new PostgreSQL database: the indexer runs with its writer process."""
    url = fresh_postgres(postgres, f"writer_{abs(hash(tmp_path))}")
    return ix.model_copy(update={"indexer": ix.indexer.model_copy(update={"database_url": url})})


def test_a_writer_that_fails_is_replaced_and_its_ranges_indexed_again_once_the_database_takes_them(
    on_postgres: Settings, tmp_path: Path
) -> None:
    url = on_postgres.indexer.database_url
    head = chain.connect(on_postgres.rpc_url, settings=on_postgres).eth.block_number
    engine = open_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as conn:  # every range fails at its first event row
            conn.execute(text("ALTER TABLE events ADD CONSTRAINT refused CHECK (log_index < 0)"))
        log = tmp_path / "indexer.log"
        run = start(on_postgres, log)
        seen: list[psutil.Process] = []
        try:
            deadline = time.monotonic() + 60
            while log.read_text().count("storing indexed rows failed") < 2:
                assert run.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                alive = [p for p in children(run) if running(p) and is_writer(p)]
                assert len(alive) <= 1, alive  # a writer at a time: the failed one is stopped
                seen += [p for p in alive if p not in seen]
                time.sleep(0.01)
            assert "IntegrityError" in log.read_text() and "refused" in log.read_text()
            assert len(seen) >= 2, seen  # the failed writer was replaced
            with engine.connect() as conn:  # nothing of a failed range: one transaction
                assert conn.execute(text("SELECT count(*) FROM hub_params")).scalar() == 0
            assert (cursor_of(url) or 0) < head
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE events DROP CONSTRAINT refused"))
            wait_for(lambda: cursor_of(url) == head, 60, "the indexer to reach the head")
            run.send_signal(signal.SIGTERM)
            assert run.wait(20) == 0, log.read_text()
        finally:
            run.kill()
        wait_for(lambda: gone(seen), 10, "the writers to stop")
        # The ranges indexed again are stored once: the tables equal a build from scratch.
        scratch = on_postgres.model_copy(
            update={
                "indexer": on_postgres.indexer.model_copy(
                    update={"database_url": f"sqlite:///{tmp_path / 'scratch.db'}"}
                )
            }
        )
        assert index_to_head(scratch) == head
        scratch_engine = open_engine(scratch.indexer.database_url)
        try:
            found = differences(tables(engine), tables(scratch_engine))
            assert not found, pformat(found, width=100)
        finally:
            scratch_engine.dispose()
    finally:
        engine.dispose()
