"""A probe for bench_console's children: Python imports this module at start when
bench/probe is on PYTHONPATH, and it does anything only when BENCH_PROBE names a file.

It appends to that file, from inside the process (monotonic clock, shared by processes):
  start <App.run called> <first frame handed to the terminal's writer>
  repaint <end> <wall ms> <CPU ms of the thread>
one `repaint` line for each of Textual's screen updates (Screen._on_timer_update: the
layout if one is due, then the compositor's render of what changed and its write). With
them the bench splits a start into what comes before App.run (interpreter, imports,
settings) and Textual's work from App.run to the first frame, and tells how much of the
console's CPU is Textual and Rich painting the screen. It wraps two methods of the pinned
Textual; nothing of scalpdesk is touched.
"""

import os

if os.environ.get("BENCH_PROBE"):
    import time

    import textual.app
    import textual.screen

    _out = open(os.environ["BENCH_PROBE"], "a", buffering=1)  # noqa: SIM115 - open for the process's life
    _run_at: list[float] = []
    _run, _display, _update = textual.app.App.run, textual.app.App._display, textual.screen.Screen._on_timer_update

    def run(self, *args, **kwargs):
        _run_at.append(time.monotonic())
        return _run(self, *args, **kwargs)

    def _display_probed(self, screen, renderable):
        result = _display(self, screen, renderable)
        if len(_run_at) == 1:
            _run_at.append(time.monotonic())
            _out.write(f"start {_run_at[0]} {_run_at[1]}\n")
        return result

    def _on_timer_update(self):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return _update(self)
        finally:
            end = time.monotonic()
            _out.write(f"repaint {end} {(time.perf_counter() - wall) * 1000:.3f} {(time.thread_time() - cpu) * 1000:.3f}\n")

    textual.app.App.run = run
    textual.app.App._display = _display_probed
    textual.screen.Screen._on_timer_update = _on_timer_update
