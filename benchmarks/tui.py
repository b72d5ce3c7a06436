"""TUI speed: first paint and per-keystroke filter latency, ours against the anchor.

Anchor (docs/anchors.md, "Terminal UI"): a plain Textual app with a DataTable of
10,000 rows, filtered naively (clear the table, add the matching rows). Target
(issue 8): first screen drawn within 1.0 s and a filter keystroke within 100 ms at
10,000 definitions.

Each measurement runs in a fresh process (so imports count, as in the anchor) under
``App.run_test()`` at 160x48. First paint = from spawning the process to the first
frame composed after the list got its rows (ours loads the registry from the JSON
files in a worker; the anchor reads the same files before starting). A keystroke = from
the key event to the first frame composed after the list was refiltered (the pilot's
own idle waits, 20 ms steps, are not counted; ``App._display`` marks the frames).

    python benchmarks/tui.py                 # 1,000 and 10,000 definitions
    python benchmarks/tui.py --counts 10000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUERY = "fusion"
SIZE = (160, 48)
FIRST_PAINT_TARGET_S = 1.0
KEYSTROKE_TARGET_S = 0.100


class _FrameClock:
    """Times of the frames the app composes (``App._display`` gets each screen update;
    headless, the bytes are not written, everything up to them is done)."""

    def __init__(self, app: object) -> None:
        self.frames: list[float] = []
        self.marks: list[float] = []  # when the rows were (re)computed
        original = app._display  # type: ignore[attr-defined]

        def display(screen: object, renderable: object) -> None:
            if renderable is not None:
                self.frames.append(time.perf_counter())
            original(screen, renderable)

        app._display = display  # type: ignore[attr-defined]

    def mark(self) -> None:
        self.marks.append(time.perf_counter())

    async def frame_after(self, moment: float, timeout: float = 30.0) -> float:
        import asyncio

        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            later = [frame for frame in self.frames if frame >= moment]
            if later:
                return later[0]
            await asyncio.sleep(0.0005)
        raise TimeoutError("no frame")

    async def keystroke(self, app: object, pilot: object, key: str) -> float:
        """Seconds from the key event to the first frame after the list was refiltered."""
        import asyncio

        from textual import events

        await pilot.pause()  # type: ignore[attr-defined]
        marks_before = len(self.marks)
        char = {"backspace": None}.get(key, key)
        start = time.perf_counter()
        app._driver.send_message(events.Key(key, char))  # type: ignore[attr-defined]
        deadline = start + 30
        while len(self.marks) == marks_before and time.perf_counter() < deadline:
            await asyncio.sleep(0.0005)
        frame = await self.frame_after(self.marks[-1])
        return frame - start


def _child_ours(home: str, spawned_at: float) -> dict[str, object]:
    import asyncio

    from tunehub.config import load_config
    from tunehub.tui.app import TunehubApp
    from tunehub.tui.screens.main import MainScreen
    from tunehub.tui.widgets.definition_list import DefinitionList

    async def main() -> dict[str, object]:
        app = TunehubApp(load_config(home), use_daemon=False, watch=False)
        clock = _FrameClock(app)
        apply_filter = MainScreen.apply_filter

        def timed_apply_filter(self: MainScreen) -> None:
            apply_filter(self)
            clock.mark()

        MainScreen.apply_filter = timed_apply_filter  # type: ignore[method-assign]
        async with app.run_test(size=SIZE) as pilot:
            definitions = app.screen.query_one(DefinitionList)
            while not clock.marks:
                await asyncio.sleep(0.001)
            first_frame = await clock.frame_after(clock.marks[0])
            first_paint = first_frame - clock_offset(spawned_at)
            shown = len(definitions.rows)
            await pilot.press("slash")
            latencies = [await clock.keystroke(app, pilot, key) for key in list(QUERY) + ["backspace"] * len(QUERY)]
            return {"first_paint": first_paint, "rows": shown, "latencies": latencies}

    return asyncio.run(main())


def clock_offset(spawned_at: float) -> float:
    """``spawned_at`` (wall clock, from the parent) on this process's perf_counter scale."""
    return time.perf_counter() - (time.time() - spawned_at)


def _child_anchor(home: str, spawned_at: float) -> dict[str, object]:
    import asyncio

    from textual.app import App, ComposeResult
    from textual.widgets import DataTable, Input

    rows = []
    for path in sorted((Path(home) / "finetunes").iterdir()):
        data = json.loads(path.read_text())
        model = data["model"]
        rows.append((path.stem, model["name"], model["architecture"], model["description"]))

    class Anchor(App[None]):
        def compose(self) -> ComposeResult:
            yield Input(id="filter")
            yield DataTable(id="table")

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_columns("id", "name", "architecture")
            table.add_rows(row[:3] for row in rows)
            clock.mark()

        def on_input_changed(self, event: Input.Changed) -> None:
            table = self.query_one(DataTable)
            needle = event.value.lower()
            table.clear()
            table.add_rows(
                row[:3] for row in rows if needle in row[0].lower() or needle in row[1].lower() or needle in row[3].lower()
            )
            clock.mark()

    app = Anchor()
    clock = _FrameClock(app)

    async def main() -> dict[str, object]:
        async with app.run_test(size=SIZE) as pilot:
            while not clock.marks:
                await asyncio.sleep(0.001)
            first_frame = await clock.frame_after(clock.marks[0])
            first_paint = first_frame - clock_offset(spawned_at)
            shown = app.query_one(DataTable).row_count
            app.query_one(Input).focus()
            latencies = [await clock.keystroke(app, pilot, key) for key in list(QUERY) + ["backspace"] * len(QUERY)]
            return {"first_paint": first_paint, "rows": shown, "latencies": latencies}

    return asyncio.run(main())


def _measure(which: str, home: Path) -> dict[str, object]:
    spawned_at = time.time()
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", which, str(home), repr(spawned_at)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if completed.returncode != 0:
        raise SystemExit(f"{which} child failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _report(label: str, results: list[dict[str, object]]) -> tuple[float, float, float, float]:
    """Best first paint over the runs; keystroke median, 90th percentile and max pooled."""
    latencies = sorted(x for result in results for x in result["latencies"])  # type: ignore[attr-defined]
    median = statistics.median(latencies)
    p90 = latencies[min(len(latencies) - 1, int(round(0.9 * (len(latencies) - 1))))]
    worst = latencies[-1]
    paints = sorted(float(result["first_paint"]) for result in results)  # type: ignore[arg-type]
    print(
        f"  {label:<8} first paint best {paints[0]:6.3f} s, median {statistics.median(paints):6.3f} s "
        f"({results[0]['rows']} rows) | keystroke median {median * 1000:6.1f} ms, p90 {p90 * 1000:6.1f} ms, "
        f"max {worst * 1000:6.1f} ms ({len(latencies)} keys)"
    )
    return paints[0], median, p90, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each app, alternating (default 3)")
    parser.add_argument("--child", nargs=3, metavar=("WHICH", "HOME", "SPAWNED_AT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, home, spawned_at = args.child
        function = _child_ours if which == "ours" else _child_anchor
        print(json.dumps(function(home, float(spawned_at))))
        return

    sys.path.insert(0, str(HERE))
    from _tui_home import write_home

    print(f"load average before: {os.getloadavg()}")
    for count in args.counts:
        with tempfile.TemporaryDirectory(prefix="tunehub-tui-bench-") as tmp:
            home = write_home(Path(tmp), count)
            print(f"{count:,} definitions (filter typed: {QUERY!r} then erased), {SIZE[0]}x{SIZE[1]}:")
            runs: dict[str, list[dict[str, object]]] = {"anchor": [], "ours": []}
            for _ in range(args.repeat):  # alternate, so that load changes hit both alike
                for which in ("anchor", "ours"):
                    runs[which].append(_measure(which, home))
            anchor = _report("anchor", runs["anchor"])
            ours = _report("ours", runs["ours"])
            print(
                f"  ratio ours/anchor: first paint {ours[0] / anchor[0]:.2f}x, keystroke median "
                f"{ours[1] / anchor[1]:.2f}x, p90 {ours[2] / anchor[2]:.2f}x, max {ours[3] / anchor[3]:.2f}x"
            )
            verdict_paint = "meets" if ours[0] <= FIRST_PAINT_TARGET_S else "MISSES"
            verdict_key = "meets" if ours[2] <= KEYSTROKE_TARGET_S else "MISSES"
            print(
                f"  target: first paint <= {FIRST_PAINT_TARGET_S:.1f} s: {verdict_paint} "
                f"({ours[0] / FIRST_PAINT_TARGET_S:.2f}x of target); keystroke p90 <= "
                f"{KEYSTROKE_TARGET_S * 1000:.0f} ms: {verdict_key} ({ours[2] / KEYSTROKE_TARGET_S:.2f}x of target; "
                f"max {ours[3] / KEYSTROKE_TARGET_S:.2f}x)"
            )
            print(f"  load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
