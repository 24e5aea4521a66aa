"""ScalpDeskApp: the console a trader lives in over SSH.

The console is a client of the engine of its state directory: it attaches to the
engine's socket (app.client), gets the desk as it is, then every event, and sends the
operator's commands; it has no engine in its process and never calls a venue. The
engine owns every timer (time exits, expiries, cycles): the console only shows their
countdowns, on the engine's market clock. When the engine goes away the console says
so at once, keeps its last picture greyed, and reattaches when the engine is back.

The app composes the panels, binds the keys, and runs every command as a worker so a
key never waits on the engine: the key shows its effect at once, the result arrives
later as an event. One timer ticks every countdown.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from textual import events, on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.geometry import Size
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Tab, Tabs

from app.client import EngineLink
from app.messages import EngineEvent, LinkStatus
from app.dialogs import ChoiceScreen, ConfirmScreen, DecisionScreen, HelpScreen, Section, binding_rows
from engine.clock import Clock
from engine.commands import (
    Approve,
    CloseAll,
    Command,
    CommandResult,
    ForceClose,
    Pause,
    Reject,
    RunCycle,
    SetMode,
    Shutdown,
)
from engine.config import Settings
from engine.events import (
    AccountUpdated,
    BaseEvent,
    BlocksUpdated,
    CooldownStarted,
    DecisionEvent,
    EngineState,
    LogEvent,
    MarketUpdated,
    PositionClosed,
    PositionOpened,
    PositionsUpdated,
    UsageUpdated,
)
from engine.models import DecisionStatus
from widgets import format as fmt
from widgets.cooldowns import CooldownsPanel
from widgets.decisions import DecisionsPanel, HistoryTable, PendingTable
from widgets.footer import KeysFooter
from widgets.logs import LogPanel
from widgets.market import MarketPanel
from widgets.positions import PositionsPanel, PositionsTable
from widgets.status import StatusBar

if TYPE_CHECKING:
    from app.screens import JournalCache

log = logging.getLogger(__name__)


def find_styles() -> Path:
    """styles.tcss at the top of the checkout (editable install), else shipped next to app/."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "styles.tcss", here / "styles.tcss"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"styles.tcss not found next to {here.parent} or in {here}")


PANELS = ("decisions", "positions", "cooldowns", "log", "market")
PANEL_TITLES = {"decisions": "Decisions", "positions": "Positions", "cooldowns": "Cooldowns", "log": "Log",
                "market": "Market"}
TICK_SEC = 0.5  # countdowns show whole seconds; half a second keeps them from skipping one
APPROVAL_TOAST_SEC = 8.0
SEVERITY = {"info": "information", "warning": "warning", "error": "error"}  # a result's level as a toast
TRADING_ACTIONS = {"mode", "pause", "run_cycle", "close_all", "help", "panel", "quit", "journal", "statistics"}


def _supersedes(new: MarketUpdated | BlocksUpdated, old: MarketUpdated | BlocksUpdated) -> bool:
    """True if painting `new` after `old` leaves nothing of `old`: both a market, `new` with
    the prices, closes and blocks of every symbol `old` had them for."""
    return (isinstance(new, MarketUpdated) and isinstance(old, MarketUpdated)
            and new.features.keys() >= old.features.keys() and new.closes.keys() >= old.closes.keys()
            and new.blocks.keys() >= old.blocks.keys())


def screens() -> ModuleType:
    """app.screens: the journal and the statistics, imported at first use (see warm_screens)."""
    import app.screens

    return app.screens


def breakpoint_classes(size: Size, horizontal: list[tuple[int, str]],
                       vertical: list[tuple[int, str]]) -> dict[str, bool]:
    """The breakpoint classes a screen of this size has (as Screen._on_resize sets them):
    in each direction, the class of the widest breakpoint the size reaches."""
    classes: dict[str, bool] = {}
    for extent, points in ((size.width, horizontal), (size.height, vertical)):
        reached = [name for at, name in sorted(points, reverse=True) if extent >= at][:1]
        classes.update({name: name in reached for _, name in points})
    return classes


class DeskScreen(Screen):
    """The console's main screen. Textual restyles every node of a screen when it is
    resumed; the first resume comes right after the panels were mounted and styled, and
    restyled all of them again before the first frame (about 35 ms of the start here).
    Later resumes (a dialog closed) restyle as Textual does."""

    _first_resume = True

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        # Called before Screen's own handler (Textual dispatches along the MRO, the
        # subclass first), which reads refresh_styles.
        if self._first_resume:
            self._first_resume = False
            event.refresh_styles = False

    def _compositor_refresh(self) -> None:
        """Send the desk's changes to the terminal, unless a screen without transparency
        covers it (the journal, the statistics, help and every confirmation: styles.tcss).

        Textual counts the screen under the top one as visible whatever the top one's
        background (App._background_screens looks at the screens below only). So each of
        the desk's updates made the top screen render those regions again and write them,
        unchanged, and then marked the whole desk for a repaint, which the top screen
        rendered and wrote in full at the desk's next update. With the journal open that
        was 25–29 KiB/s and 6–7 % of a core for lines already on the terminal. Covered,
        the desk's widgets still take their changes; Textual repaints the whole desk when
        it is shown again (Screen._on_screen_resume refreshes it)."""
        top = self.app.screen
        if top is not self and top.styles.background.a == 1:
            self._compositor._dirty_regions.clear()
            self._dirty_widgets.clear()
            return
        super()._compositor_refresh()


class ScalpDeskApp(App[int]):
    """The console: status bar, decisions, positions, cooldowns, log, footer."""

    CSS_PATH = str(find_styles())
    TITLE = "scalpdesk"
    ENABLE_COMMAND_PALETTE = False
    # Below 120 columns or 34 lines the panels become tabs, one at a time.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]

    BINDINGS = [
        Binding("a", "mode", "Mode", tooltip="Switch AUTO/APPROVE (AUTO asks; on LIVE, type AUTO)"),
        Binding("p", "pause", "Pause", tooltip="Pause or resume new entries (exits keep running)"),
        Binding("r", "run_cycle", "Cycle", tooltip="Run a decision cycle now"),
        Binding("X", "close_all", "Close all", tooltip="Close every position (kill switch) and pause entries"),
        Binding("question_mark", "help", "Help", tooltip="This list of keys"),
        Binding("q", "quit", "Quit", tooltip="Quit (asks first while positions are open or decisions wait)"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True, tooltip="Quit, as q"),
        Binding("1", "panel('decisions')", "Decisions", show=False, tooltip="Show the decisions panel"),
        Binding("2", "panel('positions')", "Positions", show=False, tooltip="Show the positions panel"),
        Binding("3", "panel('cooldowns')", "Cooldowns", show=False, tooltip="Show the cooldowns panel"),
        Binding("4", "panel('log')", "Log", show=False, tooltip="Show the log panel"),
        Binding("5", "panel('market')", "Market", show=False, tooltip="Show the market watch"),
        # After ? and q: where the footer is too narrow for every key, these are the ones cut.
        Binding("j", "journal", "Journal", tooltip="Every closed trade: filters, the decisions behind each, CSV export"),
        Binding("s", "statistics", "Stats", tooltip="Statistics: today, 7 days, 30 days, all; expectations, equity curve"),
    ]

    def __init__(self, socket: Path, settings: Settings, *, clock: Clock | None = None, freeze_gc: bool = False,
                 prepare: Callable[[], Awaitable[object]] | None = None, notice: str = "") -> None:
        """socket: the engine's; settings: this console's (the state directory, the journal's
        start equity); clock: the engine's market clock when it is in this process (tests),
        else followed from the engine's hello; prepare: awaited before attaching (tests
        start their engine's socket in the app's own loop); notice: a warning shown on start."""
        super().__init__()
        self._notice = notice
        self.settings = settings
        self.freeze_gc = freeze_gc
        self.link = EngineLink(socket, self._from_engine, self._link_status, on_replayed=self._replayed)
        self._clock = clock
        self._prepare = prepare
        self.started = asyncio.Event()  # attached, and the engine's picture is in
        self.bells = 0
        self.current_panel = "decisions"
        # The engine as its events tell it.
        self.mode, self.venue, self.paused, self.degraded = settings.mode, settings.venue, False, ""
        self.next_cycle_at: float | None = None
        self._replaying: set[str] = set()  # decisions shown PENDING by the picture being replayed
        self._approval_toast_at = -APPROVAL_TOAST_SEC
        self._gc = GcPolicy()
        # Prices waiting for the tick (see paint_waiting): the newest picture of the
        # positions, and the market watch's updates in the order they came.
        self._positions_pending: PositionsUpdated | None = None
        self._market_pending: list[MarketUpdated | BlocksUpdated] = []
        self._journal: JournalCache | None = None  # what j and s read, kept between reads
        self._confirm: ConfirmScreen | None = None  # composed once the desk is on screen (warm_screens)

    # --- layout ----------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        return DeskScreen(id="_default")

    def compose(self) -> ComposeResult:
        # The screen's breakpoint classes before its panels are mounted: Textual sets them
        # at the screen's first Resize, after every panel has been styled and laid out
        # once, and every node was styled again and the screen drawn twice (about 60 ms of
        # the start here). The first Resize then finds them set.
        self.screen.update_classes(breakpoint_classes(self.size, self.HORIZONTAL_BREAKPOINTS,
                                                      self.VERTICAL_BREAKPOINTS))
        # The app keeps its own references: App.query_one searches only the active
        # screen, and the timer and the engine's events update the panels while a
        # dialog is open on top of them.
        self.status = StatusBar(id="status")
        self.tab_bar = Tabs(*(Tab(self._tab_label(p, 0), id=f"tab-{p}") for p in PANELS), id="tabs")
        self.decisions = DecisionsPanel(id="decisions", classes="panel -current")
        self.cooldowns = CooldownsPanel(id="cooldowns", classes="panel")
        self.positions = PositionsPanel(id="positions", classes="panel")
        self.log_panel = LogPanel(id="log", classes="panel")
        self.market = MarketPanel(id="market", classes="panel")
        self.panels: dict[str, Widget] = {
            "decisions": self.decisions,
            "positions": self.positions,
            "cooldowns": self.cooldowns,
            "log": self.log_panel,
            "market": self.market,
        }
        yield self.status
        yield self.tab_bar
        self.body = Container(id="body")
        with self.body:
            yield self.market  # the top row when every panel shows
            yield self.decisions
            yield self.cooldowns
            yield self.positions
            yield self.log_panel
        yield KeysFooter(compact=True)

    @property
    def clock(self) -> Clock:
        """The engine's market clock (--speed N included)."""
        return self._clock if self._clock is not None else self.link.clock

    def on_mount(self) -> None:
        self.status.mode, self.status.venue = self.mode, self.venue
        self.set_interval(TICK_SEC, self._tick)
        self._tick()
        self.decisions.pending.focus()
        if self._notice:
            self.notify(self._notice, severity="warning", timeout=15)
        # Attached after the first frame is on screen: the engine's picture (the replay)
        # fills it. Attached at once, the replay's events were handled before the first
        # refresh and held the frame back (by about 60 ms here), and the first frame
        # had only part of the picture in it anyway.
        self.call_after_refresh(self._start_link)

    def _start_link(self) -> None:
        self.run_worker(self._attach(), name="engine-link", exit_on_error=False)

    async def _attach(self) -> None:
        if self._prepare is not None:
            await self._prepare()
        await self.link.run()

    # --- the engine's socket: called in the app's loop by the link -------------------

    def _from_engine(self, event: BaseEvent, replayed: bool) -> None:
        self.post_message(EngineEvent(event, replayed))

    def _link_status(self, attached: bool, detail: str) -> None:
        self.post_message(LinkStatus(attached, detail))

    def _replayed(self) -> None:
        self.post_message(LinkStatus(True, "", replayed=True))

    def on_link_status(self, message: LinkStatus) -> None:
        if not self._alive():
            return
        if message.replayed:
            # Pending rows the engine's picture does not have are gone (handled elsewhere,
            # or expired while this console was away).
            self.decisions.keep_pending(self._replaying)
            self._replaying = set()
            self._tick()  # the picture in full now: its log lines and prices waited for the next tick
            self.started.set()
            self.call_after_refresh(self.warm_screens)  # before the GC's freeze: its objects are kept too
            if self.freeze_gc:
                self.call_after_refresh(self._gc.tick, time.monotonic())
            return
        was = not self.status.detached
        if message.attached or was:  # while away, the cause stays said (not each failed retry)
            self.status.detached = "" if message.attached else message.detail
        self.body.set_class(not message.attached, "-detached")
        if message.attached:
            self._replaying = set()
            if not was:
                self.notify("Attached to the engine again: the desk is live.", title="ENGINE BACK", timeout=6)
        elif self.link.refused:
            self.notify(message.detail, title="ENGINE REFUSED", severity="error", timeout=60)
            self.started.set()
        elif was and self.started.is_set():
            self.ring()
            self.notify(f"{message.detail}. The desk shows its last picture until the engine is back.",
                        title="ENGINE GONE", severity="error", timeout=15)

    # --- engine events ---------------------------------------------------------

    def on_engine_event(self, message: EngineEvent) -> None:
        if not self._alive():
            return
        e = message.event
        replayed = message.replayed
        now = self.clock.now()
        if isinstance(e, (PositionOpened, PositionClosed)):
            self.flush_positions()  # in order: the picture from before the open or close first
        if isinstance(e, DecisionEvent):
            if replayed and e.record.status is DecisionStatus.PENDING:
                self._replaying.add(e.record.decision.decision_id)
            self._decision(e, now, quiet=replayed)
        elif isinstance(e, PositionsUpdated):
            self._positions_pending = e
            if replayed:  # the engine's picture at attach: at once
                self.flush_positions()
        elif isinstance(e, PositionOpened):
            # Marks, PnL and liquidation price follow with the next PositionsUpdated.
            # Engine wish: publish the positions after an open, as after a force close.
            self.positions.opened(e.meta, now)
        elif isinstance(e, (MarketUpdated, BlocksUpdated)):
            # Marks send the whole market watch up to 4 times a second: one that sets all an
            # earlier one set leaves nothing of it to paint.
            self._market_pending = [w for w in self._market_pending if not _supersedes(e, w)]
            self._market_pending.append(e)
            if replayed:
                self.flush_market()
        elif isinstance(e, PositionClosed):
            self.positions.remove(e.trade.symbol)
            journal = sys.modules.get("app.screens")  # not imported yet: no journal is open
            for screen in self.screen_stack if journal is not None else ():
                if isinstance(screen, journal.JournalScreen):
                    screen.add_trade(e.trade)
            self.notify(e.message, severity="information" if e.trade.pnl >= 0 else "warning")
        elif isinstance(e, CooldownStarted):
            self.cooldowns.started(e.cooldown, now)
        elif isinstance(e, AccountUpdated):
            self.status.equity = e.balance.equity
            self.status.available = e.balance.available
            self.status.realised = e.realised_today
            self.status.trades = e.trades_today
        elif isinstance(e, EngineState):
            self._state(e, quiet=replayed)
        elif isinstance(e, UsageUpdated):
            budget = f"/{e.budget_usd:,.2f}" if e.budget_usd else ""
            self.status.usage = "budget spent" if e.stopped else f"${e.day_cost_usd:,.2f}{budget} today"
            self.status.usage_stopped = e.stopped
        elif isinstance(e, LogEvent) and e.level == "error" and not replayed:
            self.notify(e.message, severity="error", timeout=10)
        self.log_panel.add(e)
        self._counts()

    def paint_waiting(self) -> None:
        """Paint the prices that came since the last tick, in the tick's own repaint.

        Marks arrive up to marks_per_sec (4) times a second, each a whole picture of the
        positions and the market watch's prices, at moments of their own. Painted as they
        came, each was a repaint of its own besides the tick's (five or six a second with
        the log's; every repaint re-renders the screen from the top dirty line to the
        bottom one): now the newest picture is painted with the tick, the countdowns and
        the log, in one repaint twice a second. An open or a close is painted at once,
        after the picture that came before it."""
        self.flush_positions()
        self.flush_market()

    def flush_positions(self) -> None:
        e, self._positions_pending = self._positions_pending, None
        if e is not None:
            self.positions.show(e.positions, e.metas, self.clock.now(), e.closing)

    def flush_market(self) -> None:
        waiting, self._market_pending = self._market_pending, []
        now = self.clock.now()
        for e in waiting:  # in order: a change of blocks after a cycle's market stays
            if isinstance(e, MarketUpdated):
                self.market.market(e.features, e.closes, e.blocks, e.ts, now)
            else:
                self.market.entry_blocks(e.blocks, now)

    def _decision(self, e: DecisionEvent, now: float, quiet: bool = False) -> None:
        record = e.record
        self.decisions.decision(record, e.expires_at, now)
        self.market.decision(record)
        if quiet:  # the engine's picture at attach: shown, but not news
            return
        d = record.decision
        if record.status == "PENDING":
            self.ring()
            # One toast per burst: a cycle can queue several, and toasts must not bury the screen.
            if time.monotonic() - self._approval_toast_at > APPROVAL_TOAST_SEC:
                self._approval_toast_at = time.monotonic()
                n = len(self.decisions.expires)
                what = f"{d.symbol} {d.action.value} waits" if n == 1 else f"{n} decisions wait"
                self.notify(f"{what} for you: y approve · n reject (Decisions, key 1)",
                            title="Approval needed", severity="warning", timeout=APPROVAL_TOAST_SEC)
        elif record.status == "FAILED":
            self.notify(record.message, severity="error", timeout=10)
        elif record.status == "EXECUTED" and self.mode == "auto":
            self.notify(record.message, title="AUTO")

    def _state(self, e: EngineState, quiet: bool = False) -> None:
        fmt.set_ticks(e.ticks)
        if e.degraded and e.degraded != self.degraded and not quiet:
            self.ring()
            self.notify(f"New entries stopped (exits keep running): {e.degraded}", title="DEGRADED",
                        severity="error", timeout=30)
        if e.pause_reason and e.pause_reason != self.status.pause_reason and not quiet:
            self.ring()
            self.notify(f"New entries paused (exits keep running): {e.pause_reason}. p resumes.",
                        title="MAX DRAWDOWN", severity="error", timeout=30)
        self.mode, self.venue, self.paused, self.degraded = e.mode, e.venue, e.paused, e.degraded
        self.next_cycle_at = e.next_cycle_at
        s = self.status
        s.mode = e.mode
        s.venue = e.venue
        s.feed = e.feed
        s.paused = e.paused
        s.degraded = e.degraded
        s.pause_reason = e.pause_reason

    def ring(self) -> None:
        """The terminal bell: for what needs the trader's eyes now."""
        self.bells += 1
        self.bell()

    def _counts(self) -> None:
        n_pending = len(self.decisions.expires)
        n_pos = len(self.positions.positions)
        n_cd = len(self.cooldowns.cooldowns)
        self.status.pending = n_pending
        self.status.positions = n_pos
        for panel, n in (("decisions", n_pending), ("positions", n_pos), ("cooldowns", n_cd)):
            label = self._tab_label(panel, n)
            tab = self.tab_bar.get_tab(f"tab-{panel}")
            if tab is not None and tab.label_text != label:
                tab.label = label

    @staticmethod
    def _tab_label(panel: str, n: int) -> str:
        key = PANELS.index(panel) + 1
        return f"{key} {PANEL_TITLES[panel]} ({n})" if n else f"{key} {PANEL_TITLES[panel]}"

    # --- the one timer -----------------------------------------------------------

    def _alive(self) -> bool:
        """False once the app is closing and its panels are being taken down (the timer
        and the engine's events may still arrive then)."""
        return all(w.is_attached for w in (self.status, self.decisions.pending, self.decisions.history,
                                           self.positions.table, self.cooldowns.table, self.log_panel,
                                           self.market.table))

    def _tick(self) -> None:
        if not self._alive():
            return
        now = self.clock.now()
        self.status.clock = f"{fmt.clock(now)} UTC"
        nxt = self.next_cycle_at
        self.status.next_cycle = fmt.countdown(nxt - now) if nxt is not None else "—"
        self.decisions.tick(now)
        self.paint_waiting()
        self.positions.tick(now)
        self.cooldowns.tick(now)
        self.market.tick(now)
        self.log_panel.flush()
        self._counts()
        if self.freeze_gc:
            self._gc.tick(time.monotonic())

    # --- commands ------------------------------------------------------------------

    def command(self, command: Command, done: Callable[[CommandResult | None], None] | None = None,
                toast: bool = True) -> None:
        """Run an engine command off the key handler; its answer becomes a toast."""

        async def run() -> None:
            try:
                answer: CommandResult | None = await self.link.send(command)
            except Exception as e:  # noqa: BLE001 - report, never crash the console
                log.exception("command %s failed", command.kind)
                self.notify(f"{command.kind} failed: {type(e).__name__}: {e}", severity="error", timeout=10)
                answer = None
            else:
                if toast and answer is not None:
                    self.notify(answer.message, severity=SEVERITY[answer.level])
            if done is not None:
                done(answer)

        self.run_worker(run(), group="commands", exit_on_error=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The app's keys stay quiet while a dialog is open: it answers first.
        if action in TRADING_ACTIONS and isinstance(self.screen, ModalScreen):
            return False
        return True

    def action_mode(self) -> None:
        if self.mode == "auto":
            self.command(SetMode(mode="approve"))  # the safe direction needs no confirmation
            self.status.mode = "approve"
            return
        live = self.venue == "live"
        lines = ["The engine will execute every decision that passes the guardrails, without asking you."]
        if live:
            lines += ["", "This is the LIVE venue: real money."]
        if self.decisions.expires:
            lines += ["", f"{len(self.decisions.expires)} pending decision(s) still wait for your y / n."]

        def answered(ok: bool | None) -> None:
            if ok:
                self.command(SetMode(mode="auto"))

        self.push_screen(ConfirmScreen("Switch to AUTO?", lines, require="AUTO" if live else "", danger=live,
                                       confirm="switch to AUTO"), answered)

    def action_pause(self) -> None:
        paused = not self.paused
        self.status.paused = paused
        self.command(Pause(paused=paused))

    def action_run_cycle(self) -> None:
        self.notify("Running a decision cycle now…", timeout=3)
        self.command(RunCycle(), toast=False)

    def action_close_all(self) -> None:
        held = sorted(self.positions.positions.values(), key=lambda p: p.symbol)
        if held:
            lines = [f"{p.symbol:<10} {p.side:<5} {fmt.qty(p.size):>10}  PnL {fmt.money(p.unrealised_pnl, True)}"
                     for p in held[:8]]
            if len(held) > 8:
                lines.append(f"… and {len(held) - 8} more")
            total = sum(p.unrealised_pnl for p in held)
            lines += ["", f"PnL now {fmt.money(total, True)} USDT in all.",
                      "Reduce-only market orders close them all; new entries are paused (p resumes)."]
            title = f"Close ALL {len(held)} positions?"
        else:
            lines = ["No position is open.", "New entries will be paused (p resumes)."]
            title = "Close all and pause?"

        def answered(ok: bool | None) -> None:
            if ok:
                for p in held:
                    self.positions.mark_closing(p.symbol)
                self.status.paused = True
                self.command(CloseAll(), done=lambda _: self._unmark_closing())

        self.confirm(title, lines, answered, danger=True, confirm="close all")

    def _unmark_closing(self) -> None:
        for sym in list(self.positions.closing):
            self.positions.close_failed(sym)  # still there: the close did not happen

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_sections()))

    @property
    def journal(self) -> JournalCache:
        if self._journal is None:
            self._journal = screens().JournalCache(self.settings.state_dir)
        return self._journal

    def warm_screens(self) -> None:
        """Import the journal and the statistics (about 40 ms here) once the engine's picture
        is on screen: not before the first frame, and not on the first j or s."""
        screens()
        self.keep_confirm()

    def keep_confirm(self) -> None:
        """Compose and style, off screen, the dialog that force close and close all ask with
        (about half the time from c to the question on screen, under the bench's load). It is made
        as they use it, dangerous and with the screen's breakpoint classes, so that opening it
        restyles nothing; a resize while it is away restyles it once, as Textual would. Made
        once: the replay after a re-attach warms the screens again."""
        if self._confirm is not None:
            return
        kept = ConfirmScreen("", [], danger=True)
        kept.update_classes(breakpoint_classes(self.size, self.HORIZONTAL_BREAKPOINTS, self.VERTICAL_BREAKPOINTS))
        self.install_screen(kept, "confirm")  # not removed when it is dismissed
        self._get_screen("confirm")  # Textual's own start of an installed screen: composed and mounted now
        self._confirm = kept

    def confirm(self, title: str, lines: list[str], answered: Callable[[bool | None], None], *,
                danger: bool = False, confirm: str = "confirm") -> None:
        """Ask with the dialog kept composed (ConfirmScreen.ask); a new one before it is made,
        or while it is open."""
        kept = self._confirm
        if kept is None or kept in self.screen_stack:
            self.push_screen(ConfirmScreen(title, lines, danger=danger, confirm=confirm), answered)
        else:
            self.push_screen(kept.ask(title, lines, danger=danger, confirm=confirm), answered)

    def action_journal(self) -> None:
        s = self.settings
        self.push_screen(screens().JournalScreen(s.state_dir, start_equity=s.paper_equity,
                                       default_cooldown_sec=s.default_cooldown_sec, now=self.clock.now,
                                       cache=self.journal))

    def action_statistics(self) -> None:
        s = self.settings
        self.push_screen(screens().StatisticsScreen(s.state_dir, start_equity=s.paper_equity,
                                          default_cooldown_sec=s.default_cooldown_sec, now=self.clock.now,
                                          cache=self.journal))

    def action_panel(self, panel: str) -> None:
        self.show_panel(panel, focus=True)

    def action_quit(self) -> None:
        n_pos = len(self.positions.positions)
        n_pending = len(self.decisions.expires)
        lines = ["The engine keeps running without this console: time exits, trailing stops, cooldowns "
                 "and the decision cycles go on; `scalpdesk` attaches to it again, `scalpdesk stop` stops it."]
        if n_pending:
            lines += ["", f"{n_pending} decision(s) wait for approval: they expire unless a console approves them."]
        if n_pos:
            lines += ["", f"Stopping the engine too leaves {n_pos} position(s) OPEN on the venue with their "
                          "TP/SL, and NOTHING closes them at their time limit until an engine runs again."]
        choices = [("y", "quit the console (the engine goes on)", "quit"), ("S", "stop the engine too", "stop")]

        def answered(choice: str | None) -> None:
            if choice == "quit":
                self.exit(0)
            elif choice == "stop":
                self.command(Shutdown(), done=lambda result: self.exit(0) if result and result.ok else None)

        self.push_screen(ChoiceScreen("Quit the console?", lines, choices, danger=bool(n_pos)), answered)

    async def on_unmount(self) -> None:
        await self.link.close()

    # --- messages from the panels ------------------------------------------------

    def on_decisions_panel_approve(self, msg: DecisionsPanel.Approve) -> None:
        d = msg.record.decision
        did = d.decision_id
        if msg.expires_at <= self.clock.now():
            self.notify(f"{d.symbol} {d.action.value} has expired: it cannot be approved.", severity="warning")
            self.command(Approve(decision_id=did), toast=False)  # the engine records it EXPIRED
            return
        self.decisions.mark_sending(did, "approving")
        self.command(Approve(decision_id=did), done=lambda _: self.decisions.answer_failed(did))

    def on_decisions_panel_reject(self, msg: DecisionsPanel.Reject) -> None:
        did = msg.record.decision.decision_id
        self.decisions.mark_sending(did, "rejecting")
        self.command(Reject(decision_id=did), done=lambda _: self.decisions.answer_failed(did))

    def on_decisions_panel_details(self, msg: DecisionsPanel.Details) -> None:
        left = None if msg.expires_at is None else msg.expires_at - self.clock.now()
        self.push_screen(DecisionScreen(msg.record, msg.record.inputs, left))

    def on_positions_table_force_close(self, msg: PositionsTable.ForceClose) -> None:
        sym = msg.symbol
        p = self.positions.positions.get(sym)
        if p is None or sym in self.positions.closing:
            return
        left = self.positions.seconds_left(sym)
        lines = [
            f"{p.side.upper()} {fmt.qty(p.size)} {sym} at {p.leverage:g}x",
            f"entry {fmt.price(p.entry_price, sym)} · mark {fmt.price(p.mark_price, sym)}",
            f"PnL now {fmt.money(p.unrealised_pnl, True)} USDT (ROI {fmt.pct(p.roi_pct)})",
            f"time exit in {fmt.countdown(left)}" if left is not None else "no time limit known",
            "",
            f"A reduce-only market order closes the whole position; a cooldown then starts for {sym}.",
        ]

        def answered(ok: bool | None) -> None:
            if ok:
                self.positions.mark_closing(sym)
                self.command(ForceClose(symbol=sym), done=lambda _: self._after_close(sym))

        self.confirm(f"Force close {sym}?", lines, answered, danger=True, confirm="close it")

    def _after_close(self, symbol: str) -> None:
        if symbol in self.positions.positions:
            self.positions.close_failed(symbol)

    # --- panels (tabs when the terminal is small) -----------------------------------

    @on(Tabs.TabActivated, "#tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        panel = str(event.tab.id).removeprefix("tab-")
        self.show_panel(panel, focus=not isinstance(self.focused, Tabs))

    def show_panel(self, panel: str, focus: bool = False) -> None:
        if panel != self.current_panel:
            self.current_panel = panel
            for p, widget in self.panels.items():
                widget.set_class(p == panel, "-current")
            tabs = self.tab_bar
            if tabs.active != f"tab-{panel}":
                tabs.active = f"tab-{panel}"
        if focus:
            self.focus_target(panel).focus()

    def focus_target(self, panel: str) -> Widget:
        if panel == "decisions":
            d = self.decisions
            return d.pending if d.expires or not d.history.row_count else d.history
        if panel == "positions":
            return self.positions.table
        if panel == "cooldowns":
            return self.cooldowns.table
        if panel == "market":
            return self.market.table
        return self.log_panel

    def on_descendant_focus(self, event) -> None:
        """Tab moved focus into another panel: in the tabbed layout, show it."""
        node = event.widget
        while node is not None and node is not self.screen:
            if node.id in PANELS:
                if node.id != self.current_panel:
                    self.show_panel(node.id)
                return
            node = node.parent

    # --- help --------------------------------------------------------------------

    def help_sections(self) -> list[Section]:
        journal = screens()
        return [
            ("Anywhere", binding_rows(self.BINDINGS) + [("Tab, Shift+Tab", "Move between the panels")]),
            ("Decisions (pending first)", binding_rows(DecisionsPanel.BINDINGS) + binding_rows(PendingTable.BINDINGS)
             + [("↑ ↓", "Move between decisions")]),
            ("Decision history", binding_rows(HistoryTable.BINDINGS)),
            ("Positions", binding_rows(PositionsTable.BINDINGS) + [("↑ ↓ ← →", "Move, scroll the columns")]),
            ("Log", [("↑ ↓ PgUp PgDn", "Scroll; Home and End jump (the newest line is at the bottom)")]),
            ("Market watch", [("↑ ↓", "Move between symbols: the latest decision and what blocks an entry, "
                                      "in full under the table")]),
            ("Journal (j)", binding_rows(journal.JournalScreen.BINDINGS) + binding_rows(journal.JournalTable.BINDINGS)),
            ("Statistics (s)", binding_rows(journal.StatisticsScreen.BINDINGS)),
            ("Dialogs", [("y", "Confirm (Enter does not)"), ("n, Esc", "Cancel"),
                         ("AUTO + Enter", "Confirm AUTO on a live venue (typed)")]),
        ]


class GcPolicy:
    """Keep Python's full collections short so a key never waits on one.

    A full collection walks every tracked object: with Textual's caches, the log and a
    hundred positions that grows past 100 ms, and under load one ran every few seconds,
    landing on key presses (p99 ~160 ms in bench/bench_console.py). Objects that have
    survived a few seconds mostly live on (widgets, rows, log lines), so they are frozen
    (moved out of the collector's sight) every few seconds and a full collection only
    walks what is newer. Every ten minutes everything is thawed for one full collection
    (~100-200 ms, the only long pause left), so the reference cycles that died meanwhile
    are freed; refcounting frees the rest.
    """

    FREEZE_SEC = 5.0
    THAW_SEC = 600.0

    def __init__(self) -> None:
        self.frozen_at: float | None = None
        self.thawed_at = 0.0

    def tick(self, now: float) -> None:
        if self.frozen_at is not None and now - self.frozen_at < self.FREEZE_SEC:
            return
        if self.frozen_at is not None and now - self.thawed_at >= self.THAW_SEC:
            gc.unfreeze()
            gc.collect()
            self.thawed_at = now
        gc.freeze()
        self.frozen_at = now
        if not self.thawed_at:
            self.thawed_at = now


def run_console(settings: Settings, argv: list[str] | None = None) -> int:
    """`scalpdesk`: attach to the engine of the state directory, starting one in the
    background (with this command's flags) when none runs; the engine outlives the console."""
    from app.client import EngineClient, EngineGone, Refused
    from app.serve import log_tail, socket_path, start_in_background, wait_for_socket

    path = socket_path(settings)

    notice = ""

    async def ensure() -> str:
        nonlocal notice
        client = EngineClient(path, role="status")
        try:
            hello = await client.connect()
            flags = engine_flags(argv or [])
            if flags:
                notice = (f"The engine already runs (pid {hello.pid}) and keeps the settings it was started with: "
                          f"{' '.join(flags)} not applied. `scalpdesk stop`, then start again to change them.")
            return ""
        except Refused as e:
            return str(e)
        except EngineGone:
            pass
        finally:
            await client.close()
        print(f"scalpdesk: starting the engine for {settings.state_dir} in the background …", flush=True)
        proc = start_in_background(settings, argv or [])
        if await wait_for_socket(path, proc):
            return ""
        return ("the engine did not start; its last lines (" + str(path.parent / "engine.log") + "):\n"
                + log_tail(settings))

    problem = asyncio.run(ensure())
    if problem:
        print(f"scalpdesk: {problem}", file=sys.stderr)
        return 2
    app = ScalpDeskApp(path, settings, freeze_gc=True, notice=notice)
    return app.run() or 0


def engine_flags(argv: list[str]) -> list[str]:
    """The flags of a `scalpdesk` command line that set the engine's settings (all but
    where its state and config are, which choose the engine rather than set it)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--state-dir", "--config"):
            skip = "=" not in arg
            continue
        if arg.startswith("--"):
            value = "" if "=" in arg or i + 1 >= len(argv) or argv[i + 1].startswith("--") else " " + argv[i + 1]
            out.append(arg + value)
    return out
