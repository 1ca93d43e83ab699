"""`revostack ui` and `up --ui`: the running stack in one window (Textual).

A client of the control socket like `ps` and `attach`: the `ps` snapshot every second (CPU and
memory sampled from one scan of the process table, in a thread), the `attach` stream for the
output, and every action as the same control request the commands send. Textual is imported
only here, so every other command keeps its start-up time.

The output is kept as lines in bounded deques — one per instance and one of everything — and
drawn by a ``ScrollView`` that renders only the lines on screen, at most ``FPS`` times a second:
a firehose costs a ``split`` and two ``append`` per line, not a widget per line.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import time
from pathlib import Path

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Static

from revostack import control
from revostack.sink import COLORS

FPS = 20  # output redraws per second at most
PS_EVERY = 1.0  # seconds between two snapshots of the services
CHANGE_TIMEOUT = 120.0
ALL = "*"
STATE_COLORS = {"healthy": "green", "running": "green", "completed": "blue", "starting": "yellow",
                "waiting": "yellow", "restarting": "yellow", "unhealthy": "red", "failed": "red", "stopped": "bright_black"}
# the prefixes in the colours `up` gives them: the sink's ANSI codes, as Rich names them
PREFIX_COLORS = tuple(f"color({c - 30 if c < 90 else c - 82})" for c in COLORS)
# terminal controls a service printed (colours, cursor moves, a lone \r, a bell): drawn, they
# would move the view's own cursor, so they are left out of what is shown (not of what is searched)
CONTROLS = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")
MATCH = Style(bgcolor="yellow", color="black")
CURRENT = Style(bgcolor="bright_red", color="white", bold=True)

HELP = """\
 ↑/↓ k/j  select an instance      Enter  its output     a  all output
 PgUp/PgDn Home/End  scroll       /  search   n/N  next/previous match
 f  only matching lines           r  restart (blue/green with a handoff)
 s  stop / start again            +/-  scale the service    R  reload
 i  type into the instance (Esc returns)     ?  this help     q  quit"""


def _name(line: str, bar: int) -> str:
    """The instance of a line ``HH:MM:SS name   | text`` (the name padded; no clock with --no-timestamps)."""
    if bar <= 0:
        return ""
    words = line[:bar].split()
    return words[-1] if words else ""


class Output:
    """The output seen so far: bounded scrollback per instance, and of everything."""

    def __init__(self, scrollback: int):
        self.scrollback = scrollback
        self.by_name: dict[str, collections.deque[str]] = {}
        self.all: collections.deque[str] = collections.deque(maxlen=scrollback)
        self.added: collections.Counter[str] = collections.Counter()  # lines ever added, per view
        self.partial = b""

    def feed(self, data: bytes) -> None:
        """Bytes of the attach stream: lines ``HH:MM:SS name | text`` (names padded)."""
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        if not cut:
            return
        by_name, every = self.by_name, self.all
        added = self.added
        lines = data[:cut - 1].decode("utf-8", "replace").split("\n")
        every.extend(lines)
        for line in lines:
            bar = line.find(" | ")
            name = _name(line, bar)
            q = by_name.get(name)
            if q is None:
                q = by_name[name] = collections.deque(maxlen=self.scrollback)
            q.append(line)
            added[name] += 1
        added[ALL] += len(lines)

    def lines(self, view: str) -> collections.deque[str]:
        if view == ALL:
            return self.all
        return self.by_name.setdefault(view, collections.deque(maxlen=self.scrollback))


class LogView(ScrollView, can_focus=False):
    """The output pane: draws only the visible lines of the current source."""

    def __init__(self, output: Output, **kw):
        super().__init__(**kw)
        self.output = output
        self.view = ALL
        self.term: str | None = None
        self.pattern: re.Pattern | None = None
        self.filtered = False
        self.current: int | None = None  # the current match: its index counted from the view's first line ever
        self._skipped_seen = 0  # ``skipped`` at the last redraw
        self.follow = True
        self.seen_added = 0  # lines of this view at the moment the user scrolled back
        self._rows: list[str] | collections.deque[str] = output.all
        self._colors: dict[str, str] = {}  # of each instance's prefix
        self._service_colors: dict[str, str] = {}

    # -- what is shown ---------------------------------------------------------------------------
    def source(self) -> list[str] | collections.deque[str]:
        lines = self.output.lines(self.view)
        if self.filtered and self.pattern is not None:
            return [line for line in lines if self.pattern.search(line)]
        return lines

    def matches(self) -> list[int]:
        if self.pattern is None:
            return []
        rows = self._rows
        return [i for i, line in enumerate(rows) if self.pattern.search(line)]

    def update_rows(self) -> None:
        self._rows = self.source()
        offset = self.skipped
        dropped, self._skipped_seen = offset - self._skipped_seen, offset
        width = max(self.size.width, 1)
        self.virtual_size = Size(width, len(self._rows))
        if self.follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        elif dropped > 0:  # the oldest lines left the scrollback: what is on screen stays put
            self.scroll_to(y=max(0, self.scroll_y - dropped), animate=False, immediate=True)
        self.refresh()

    def reset(self) -> None:
        """A new source (another view, a filter): follow it from its end."""
        self.current = None
        self.follow = True
        self._skipped_seen = 0

    @property
    def skipped(self) -> int:
        """Lines of the view already dropped from its scrollback (none for a filtered view, a copy)."""
        rows = self._rows
        return 0 if isinstance(rows, list) else self.output.added[self.view] - len(rows)

    def new_since(self) -> int:
        return 0 if self.follow else self.output.added[self.view] - self.seen_added

    # -- scrolling -----------------------------------------------------------------------------------
    def set_follow(self, follow: bool) -> None:
        if follow == self.follow:
            return
        self.follow = follow
        self.seen_added = self.output.added[self.view]

    def page(self, direction: int) -> None:
        step = max(1, self.size.height - 1) * direction
        self.scroll_to(y=max(0, self.scroll_y + step), animate=False, immediate=True)
        self.set_follow(direction > 0 and self.scroll_y >= self.max_scroll_y)

    def home(self) -> None:
        self.scroll_to(y=0, animate=False, immediate=True)
        self.set_follow(False)

    def end(self) -> None:
        self.set_follow(True)
        self.update_rows()

    def show(self, index: int) -> None:
        """Make source line ``index`` the current match and scroll it on screen (a third from the top)."""
        self.set_follow(False)
        self.current = index + self.skipped
        self.scroll_to(y=max(0, index - self.size.height // 3), animate=False, immediate=True)
        self.refresh()

    def current_index(self) -> int | None:
        return None if self.current is None else self.current - self.skipped

    # -- drawing -------------------------------------------------------------------------------------
    def _service_color(self, name: str) -> str:
        """One colour per service, in the order the services appear, as `up` gives them."""
        service = name.rsplit(".", 1)[0]
        if service not in self._service_colors:
            self._service_colors[service] = PREFIX_COLORS[len(self._service_colors) % len(PREFIX_COLORS)]
        return self._service_colors[service]

    def render_line(self, y: int) -> Strip:
        index = int(self.scroll_y) + y
        rows = self._rows
        if index >= len(rows):
            return Strip.blank(self.size.width)
        line = rows[index]
        if not line.isprintable():
            line = CONTROLS.sub("", line.expandtabs(8))
        segments = []
        bar = line.find(" | ")
        start = 0
        if bar > 0:
            name = _name(line, bar)
            color = self._colors.get(name)
            if color is None:
                color = self._colors[name] = "bold" if name == "system" else self._service_color(name)
            segments.append(Segment(line[:bar + 2], Style.parse(color)))
            start = bar + 2
        body = line[start:]
        if self.pattern is not None:
            style = CURRENT if index == self.current_index() else MATCH
            pos = 0
            for m in self.pattern.finditer(body):
                if m.start() > pos:
                    segments.append(Segment(body[pos:m.start()]))
                if m.end() > m.start():
                    segments.append(Segment(body[m.start():m.end()], style))
                pos = m.end()
            segments.append(Segment(body[pos:]))
        else:
            segments.append(Segment(body))
        return Strip(segments).crop(int(self.scroll_x), int(self.scroll_x) + self.size.width)


class ServicesView(ScrollView, can_focus=False):
    """The services pane: one line per instance (and one saying why a failed one failed), drawn
    line by line from cached strips; a line is drawn again only when its text changed."""

    HEADER = ("instance", "state", "port", "rst", "up", "cpu", "mem")

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lines: list[tuple[str, tuple[str, ...], str]] = []  # (key, cells, style of the state)
        self.selected_line = 0
        self._widths: list[int] = [len(h) for h in self.HEADER]
        self._strips: dict[int, Strip] = {}

    def show(self, lines: list[tuple[str, tuple[str, ...], str]], selected_line: int) -> None:
        rows = [cells for key, cells, _color in lines if not key.endswith("/why")]
        widths = [max([len(h)] + [len(c[i]) for c in rows]) for i, h in enumerate(self.HEADER)]
        if widths != self._widths:
            self._widths = widths
            self._strips.clear()
            self.refresh()
        for y, line in enumerate(lines, 1):
            if y - 1 >= len(self.lines) or self.lines[y - 1] != line:
                self._strips.pop(y, None)
                self.refresh_line(y)
        for y in range(len(lines) + 1, len(self.lines) + 1):
            self._strips.pop(y, None)
            self.refresh_line(y)
        if selected_line != self.selected_line:
            for y in (self.selected_line + 1, selected_line + 1):
                self._strips.pop(y, None)
                self.refresh_line(y)
        self.lines = lines
        self.selected_line = selected_line
        self.virtual_size = Size(sum(self._widths) + 2 * len(self._widths), len(lines) + 1)

    def render_line(self, y: int) -> Strip:
        strip = self._strips.get(y)
        if strip is None:
            strip = self._strips[y] = self._draw(y)
        return strip.crop(0, self.size.width)

    def _draw(self, y: int) -> Strip:
        if y == 0:
            text = "  ".join(h.ljust(w) for h, w in zip(self.HEADER, self._widths))
            return Strip([Segment(" " + text, Style(bold=True))])
        if y > len(self.lines):
            return Strip.blank(self.size.width)
        key, cells, color = self.lines[y - 1]
        selected = y - 1 == self.selected_line
        base = Style(reverse=True) if selected else Style()
        if key.endswith("/why"):
            return Strip([Segment("   " + cells[0], Style(color="red"))])
        segments = [Segment(" ")]
        for i, (cell, w) in enumerate(zip(cells, self._widths)):
            style = base + Style(color=color) if i == 1 else base + Style(color="red") if i == 0 and color == "red" else base
            segments.append(Segment(cell.ljust(w), style))
            if i < len(cells) - 1:
                segments.append(Segment("  ", base))
        return Strip(segments)


class StackView(App):
    """The window: services on the left, output on the right, a status line and the keys."""

    AUTO_FOCUS = None  # nothing has the focus but the search box while it is open: the keys are the view's
    CSS = """
    #services { width: 50%; max-width: 84; border-right: solid $primary-darken-2; scrollbar-size-horizontal: 0; }
    #right { width: 1fr; }
    #log { height: 1fr; }
    #status { height: 1; background: $panel; }
    #help { display: none; height: auto; background: $boost; padding: 0 1; }
    #help.shown { display: block; }
    #search { display: none; height: 1; background: $boost; }
    #search.shown { display: block; }
    """
    BINDINGS = [
        Binding("up,k", "select(-1)", "select", show=False), Binding("down,j", "select(1)", "select", show=False),
        Binding("enter", "only", "its output"), Binding("a", "everything", "all"),
        Binding("pageup", "page(-1)", "scroll", show=False), Binding("pagedown", "page(1)", "", show=False),
        Binding("home", "home", "", show=False), Binding("end", "end", "", show=False),
        Binding("slash", "search", "search"), Binding("n", "next(1)", "next", show=False),
        Binding("N", "next(-1)", "previous", show=False), Binding("f", "filter", "filter"),
        Binding("r", "restart", "restart"), Binding("s", "stop_start", "stop/start"),
        Binding("plus", "scale(1)", "+1"), Binding("minus", "scale(-1)", "-1"), Binding("R", "reload", "reload"),
        Binding("i", "type_in", "type in"), Binding("question_mark", "help", "help"), Binding("q", "quit_view", "quit"),
        Binding("ctrl+c", "quit_view", "quit", show=False, priority=True),  # as q (up --ui: as Ctrl-C stops up)
    ]

    def __init__(self, socket_path: Path, stack_name: str, scrollback: int = 10_000, stop_on_quit: bool = False):
        super().__init__()
        self.socket_path = socket_path
        self.stack_name = stack_name
        self.stop_on_quit = stop_on_quit
        self.output = Output(scrollback)
        self.rows: list[dict] = []
        self.selected = 0
        self.message = ""
        self.stopping = False
        self.stream_ended = False
        self.typing: tuple[asyncio.StreamReader, asyncio.StreamWriter, str, bool] | None = None
        self.pending: list[events.Key] | None = None  # keys typed while connecting to an instance
        self.searching: str | None = None  # the search box's text while it is open
        self._counted: tuple[float, int, tuple] = (0.0, 0, ())  # (when, matches, of what)
        self._status_text = ""
        self._dirty = False
        self._sampler = None
        self._line_of: list[int] = []

    # -- layout --------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal():
            yield ServicesView(id="services")
            with Vertical(id="right"):
                yield LogView(self.output, id="log")
                yield Static(HELP, id="help")
                yield Static("", id="search")
                yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"revostack — {self.stack_name}"
        self.log_view = self.query_one("#log", LogView)
        self.run_worker(self._follow_output(), exclusive=False, group="io")
        self.run_worker(self._poll_services(), exclusive=False, group="io")

    # -- feeding it ------------------------------------------------------------------------------------
    async def _follow_output(self) -> None:
        import json

        history = await asyncio.to_thread(recent_history, self.socket_path.parent / "logs", self.output.scrollback)
        if history:
            self.output.feed(history)
            self._changed()

        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path), limit=1 << 20)
        except OSError as e:
            self.say(f"output: {e.strerror or e}")
            return
        writer.write(json.dumps({"cmd": "attach", "services": [], "color": False}).encode() + b"\n")
        await writer.drain()
        first = await reader.readline()
        if not first:
            self.say("the stack closed the output stream")
            return
        while True:
            data = await reader.read(1 << 18)
            if not data:
                break
            self.output.feed(data)
            self._changed()
        self.stream_ended = True
        self._changed()
        if self.stopping:
            self.exit(return_code=0)
        else:
            self.say("the stack stopped (q leaves)")

    async def _poll_services(self) -> None:
        from revostack import stats

        self._sampler = stats.Sampler()
        while not self.stream_ended:
            try:
                reply, rows = await asyncio.to_thread(self._snapshot)
                for row in rows:
                    extra = reply["instances"].get(row["instance"], {})
                    row["last_exit"], row["last_check"] = extra.get("last_exit"), extra.get("last_check")
                self.rows = rows
                self._fill_services()
            except (OSError, control.NoAnswer, KeyError, ValueError):
                if not self.stopping:
                    self.say("the stack does not answer")
            await asyncio.sleep(PS_EVERY)

    def _snapshot(self) -> tuple[dict, list[dict]]:
        """(the stack's ps reply, its rows with CPU and memory): one trip to a thread a second."""
        reply = control.request(self.socket_path, {"cmd": "ps"})
        return reply, self._sampler.sample(reply)

    def _fill_services(self) -> None:
        """The services pane, from the last snapshot: a line per instance, and under a failed or
        unhealthy one a line saying why."""
        from revostack.output import human_bytes, human_duration, port_cell

        lines = []
        positions = []
        for r in self.rows:
            bad = r["state"] in ("failed", "unhealthy")
            positions.append(len(lines))
            lines.append((r["instance"], (r["instance"], r["state"], port_cell(r), str(r["restarts"]),
                                          human_duration(r["uptime_s"]),
                                          "-" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}%",
                                          human_bytes(r["memory_bytes"])), STATE_COLORS.get(r["state"], "white")))
            why = r.get("last_check") if r["state"] == "unhealthy" else r.get("last_exit") if bad else None
            if why:
                lines.append((f"{r['instance']}/why", (why[:70],), "red"))
        self._line_of = positions
        if self.rows:
            self.selected = min(self.selected, len(self.rows) - 1)
        self.query_one("#services", ServicesView).show(lines, positions[self.selected] if positions else 0)
        self._status()

    def _changed(self) -> None:
        """New output: one redraw within 1/FPS s, however many lines came (no timer while idle)."""
        if not self._dirty:
            self._dirty = True
            self.set_timer(1 / FPS, self._tick)

    def _tick(self) -> None:
        self._dirty = False
        self.log_view.update_rows()
        self._status()

    # -- the status line -----------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.message = text
        self._status()

    def _status(self) -> None:
        """One line: what was just done (first: it must not be cut), what is typed into, the view,
        the search and its match count (counted at most 4 times a second), the new lines."""
        lv = self.log_view
        parts = []
        if self.typing is not None or self.pending is not None:
            name = self.typing[2] if self.typing is not None else "…"
            parts.append(f"typing into {name} (Esc returns)")
        if self.message:
            parts.append(self.message)
        parts.append("all output" if lv.view == ALL else lv.view)
        if lv.pattern is not None:
            now = time.monotonic()
            if now - self._counted[0] > 0.25 or self._counted[2] != (lv.view, lv.term, lv.filtered):
                self._counted = (now, len(lv.matches()), (lv.view, lv.term, lv.filtered))
            parts.append(f"/{lv.term}/ {self._counted[1]} matches" + (" (filtered)" if lv.filtered else ""))
        new = lv.new_since()
        if new:
            parts.append(f"{new} new (End follows)")
        text = " · ".join(parts)
        if text != self._status_text:  # drawn again only when it changed
            self._status_text = text
            try:
                self.query_one("#status", Static).update(text)
            except Exception:  # the app is closing
                pass

    # -- selecting and scrolling -----------------------------------------------------------------------
    def selected_row(self) -> dict | None:
        return self.rows[self.selected] if 0 <= self.selected < len(self.rows) else None

    def action_select(self, step: int) -> None:
        if self.rows:
            self.selected = max(0, min(len(self.rows) - 1, self.selected + step))
            pane = self.query_one("#services", ServicesView)
            pane.show(pane.lines, self._line_of[self.selected])
            if self.log_view.view != ALL:
                self.action_only()

    def action_only(self) -> None:
        row = self.selected_row()
        if row is not None:
            self._set_view(row["instance"])

    def action_everything(self) -> None:
        self._set_view(ALL)

    def _set_view(self, view: str) -> None:
        lv = self.log_view
        lv.view = view
        lv.reset()
        lv.update_rows()
        self._status()

    def action_page(self, direction: int) -> None:
        self.log_view.page(direction)
        self._status()

    def action_home(self) -> None:
        self.log_view.home()
        self._status()

    def action_end(self) -> None:
        self.log_view.end()
        self._status()

    # -- search --------------------------------------------------------------------------------------
    # The search box is drawn by the view and fed by its own key handler (nothing ever has the
    # focus): keys typed in a burst, as a paste or tmux sends them, all land in it, in order.
    def action_search(self) -> None:
        self.searching = self.log_view.term or ""
        self._draw_search()

    def _draw_search(self) -> None:
        box = self.query_one("#search", Static)
        if self.searching is None:
            box.remove_class("shown")
        else:
            box.add_class("shown")
            box.update(f"/{self.searching}▏  (a regular expression: Enter applies, Esc cancels, empty clears)")

    def _apply_search(self, text: str) -> None:
        self.searching = None
        self._draw_search()
        lv = self.log_view
        if not text:
            lv.term = lv.pattern = None
            lv.filtered = False
        else:
            try:
                lv.pattern = re.compile(text, re.IGNORECASE)
            except re.error:
                lv.pattern = re.compile(re.escape(text), re.IGNORECASE)
            lv.term = text
        lv.current = None
        lv.update_rows()
        if lv.pattern is not None:
            self.action_next(-1)  # the last match, nearest the newest line
        self._status()

    def check_action(self, action: str, parameters) -> bool | None:
        """While the search box is open, or while typing into an instance (or connecting to it),
        the keys are not the view's (Esc aside)."""
        return self.typing is None and self.pending is None and self.searching is None

    def on_key(self, event: events.Key) -> None:
        if self.searching is not None:
            event.stop()
            event.prevent_default()
            if event.key == "escape":
                self.searching = None
                self._draw_search()
            elif event.key == "enter":
                self._apply_search(self.searching)
            elif event.key == "backspace":
                self.searching = self.searching[:-1]
                self._draw_search()
            elif event.character and event.character.isprintable():
                self.searching += event.character
                self._draw_search()
            return
        if self.typing is not None or self.pending is not None:
            event.stop()
            event.prevent_default()
            if event.key == "escape":
                self._stop_typing()
            elif self.typing is not None:
                self._type(event)
            else:
                self.pending.append(event)  # typed while connecting: sent once connected

    def action_next(self, direction: int) -> None:
        lv = self.log_view
        found = lv.matches()
        if not found:
            self.say("no match" if lv.pattern is not None else "no search (/ searches)")
            return
        current = lv.current_index()
        if current is None:
            target = found[-1] if direction < 0 else found[0]
        elif direction > 0:
            target = next((i for i in found if i > current), found[0])
        else:
            target = next((i for i in reversed(found) if i < current), found[-1])
        lv.show(target)
        self.say(f"match {found.index(target) + 1} of {len(found)}")

    def action_filter(self) -> None:
        lv = self.log_view
        if lv.pattern is None:
            self.say("search first (/), then f shows only the matching lines")
            return
        lv.filtered = not lv.filtered
        lv.reset()
        lv.update_rows()
        self._status()

    # -- actions: the same control requests as the commands ----------------------------------------------
    async def _ask(self, msg: dict, done: str) -> dict | None:
        try:
            reply = await asyncio.to_thread(control.request, self.socket_path, msg, CHANGE_TIMEOUT)
        except (OSError, control.NoAnswer) as e:
            self.say(f"{msg['cmd']}: the stack did not answer ({e})")
            return None
        if not reply.get("ok"):
            problems = reply.get("problems") or []
            self.say(f"{msg['cmd']}: {problems[0] if problems else reply.get('error') or 'refused'}")
            return None
        self.say(done.format(**{k: ", ".join(v) if isinstance(v, list) else v for k, v in reply.items()}))
        return reply

    def action_restart(self) -> None:
        row = self.selected_row()
        if row is not None:
            self.say(f"restarting {row['service']}…")
            self.run_worker(self._ask({"cmd": "restart", "services": [row["service"]]}, "restarting {restarted}"))

    def action_stop_start(self) -> None:
        row = self.selected_row()
        if row is None:
            return
        if row["state"] == "stopped":
            self.say(f"starting {row['service']} again…")
            self.run_worker(self._ask({"cmd": "restart", "services": [row["service"]]}, "started {restarted} again"))
        else:
            self.say(f"stopping {row['service']}…")
            self.run_worker(self._ask({"cmd": "stop-services", "services": [row["service"]]}, "stopped {stopped}"))

    def action_scale(self, step: int) -> None:
        row = self.selected_row()
        if row is None:
            return
        n = max(0, sum(1 for r in self.rows if r["service"] == row["service"]) + step)
        self.say(f"scaling {row['service']} to {n}…")
        self.run_worker(self._ask({"cmd": "scale", "scale": {row["service"]: n}},
                                  f"{row['service']}={n}: started [{{added}}] stopped [{{removed}}]"))

    def action_reload(self) -> None:
        self.say("reloading the Stackfile…")
        self.run_worker(self._ask({"cmd": "reload"}, "{summary}"))

    def action_help(self) -> None:
        self.query_one("#help", Static).toggle_class("shown")

    def action_quit_view(self) -> None:
        if not self.stop_on_quit or self.stream_ended:
            self.exit(return_code=0)
            return
        if self.stopping:
            return
        self.stopping = True
        self.log_view.end()
        self.action_everything()
        self.say("stopping the stack…")
        self.run_worker(self._ask({"cmd": "stop"}, "stopping the stack…"))

    # -- typing into an instance (revostack connect's protocol) -----------------------------------------
    def action_type_in(self) -> None:
        row = self.selected_row()
        if row is None or self.typing is not None or self.pending is not None:
            return
        self.pending = []
        self.run_worker(self._start_typing(row["instance"]))

    async def _start_typing(self, name: str) -> None:
        import json

        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
            writer.write(json.dumps({"cmd": "connect", "instance": name}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline() or b"{}")
        except (OSError, ValueError) as e:
            self.pending = None
            self.say(f"i: {e}")
            return
        if not reply.get("ok") or self.pending is None:  # refused, or Esc while connecting
            if self.pending is not None:
                self.say(f"i: {reply.get('error') or 'refused'}")
            self.pending = None
            writer.close()
            return
        self.typing = (reader, writer, reply["instance"], bool(reply.get("pty")))
        typed, self.pending = self.pending, None
        for event in typed:
            self._type(event)
        self._set_view(reply["instance"])
        self.say("")
        self.run_worker(self._drain_connect(reader), group="io")

    async def _drain_connect(self, reader: asyncio.StreamReader) -> None:
        """The connection's own frames are not shown (the attach stream has the output); its end is."""
        from revostack.connect import FRAME

        try:
            while True:
                kind, size = FRAME.unpack(await reader.readexactly(FRAME.size))
                payload = await reader.readexactly(size)
                if kind == b"e":
                    self.say(payload.decode("utf-8", "replace"))
                    break
        except (asyncio.IncompleteReadError, OSError):
            pass
        self._stop_typing(quiet=True)

    def _type(self, event: events.Key) -> None:
        from revostack.connect import frame

        _, writer, _, pty = self.typing
        keys = {"enter": "\r" if pty else "\n", "tab": "\t", "backspace": "\x7f", "ctrl+c": "\x03",
                "ctrl+d": "\x04", "up": "\x1b[A", "down": "\x1b[B", "right": "\x1b[C", "left": "\x1b[D"}
        text = keys.get(event.key) or event.character or ""
        if text:
            writer.write(frame(b"i", text.encode()))

    def _stop_typing(self, quiet: bool = False) -> None:
        self.pending = None
        if self.typing is not None:
            self.typing[1].close()
            self.typing = None
            if not quiet:
                self.say("")
            self._status()


HISTORY_BYTES = 200  # bytes read back per line of scrollback, at most, from each log file


def recent_history(logs: Path, scrollback: int) -> bytes:
    """What the stack printed before the view opened: the end of each log file (the instances'
    and system.log), merged by time, as the attach stream prints it."""
    import heapq

    streams = []
    for path in sorted(logs.glob("*.log")):
        name = path.stem
        if name in ("revostack", "up"):
            continue
        try:
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                start = max(0, size - scrollback * HISTORY_BYTES)
                f.seek(start)
                data = f.read()
        except OSError:
            continue
        lines = data.split(b"\n")[1 if start else 0:-1][-scrollback:]
        streams.append([(line[:23], name, line[24:]) for line in lines if len(line) > 23])
    merged = heapq.merge(*streams, key=lambda x: x[0])
    return b"".join(ts[11:19] + b" " + name.encode() + b" | " + text + b"\n" for ts, name, text in merged)


def run(socket_path: Path, stack_name: str, scrollback: int, stop_on_quit: bool) -> int:
    import signal

    app = StackView(socket_path, stack_name, scrollback, stop_on_quit)
    if stop_on_quit:  # up --ui: a SIGTERM stops the stack as q does; the terminal closing too
        signal.signal(signal.SIGTERM, lambda *_: app.call_later(app.action_quit_view))
        signal.signal(signal.SIGHUP, lambda *_: _hung_up(socket_path))
    app.run()
    stats = os.environ.get("REVOSTACK_UI_STATS")
    if stats:  # for the benchmarks: what the view received and kept
        write_stats(app.output, stats)
    return app.return_code or 0


def _hung_up(socket_path: Path) -> None:
    """`up --ui` lost its terminal: stop the stack and wait for it, then leave at once (with no
    terminal, the view's own shutdown would wait forever on its writes)."""
    control.stop_and_wait(socket_path, CHANGE_TIMEOUT)
    os._exit(128 + 1)


def write_stats(output: Output, path: str) -> None:
    import json

    kept = {name: list(lines) for name, lines in output.by_name.items()}
    with open(path, "w") as f:
        json.dump({"received": dict(output.added), "kept": {n: len(v) for n, v in kept.items()},
                   "tails": {n: v[-3:] for n, v in kept.items()},
                   "seqs": {n: [m.group(1) for m in map(SEQ.search, v) if m] for n, v in kept.items()}}, f)


SEQ = re.compile(r" n=(\d+) ")
