"""A panel's border title, changed by repainting its top line only.

Textual's setter (Widget.border_title) repaints the whole widget. The market watch's title
carries the time of its prices, which move every second, and a panel repainted whole is
every cell of it rendered and written again: for the market watch at 160x48, about 25 KB
a second to the terminal (over SSH), most of what the console wrote. The other panels'
titles count their rows, which change less often, but a hundred positions' panel
repainted for a new count is the same waste.
"""

from __future__ import annotations

from textual.geometry import Region
from textual.widget import Widget


def set_border_title(widget: Widget, title: str) -> None:
    """Set `widget`'s border title (plain text); once it has a size, only the top border
    line is repainted. Stores the title as Textual's own setter does in the pinned release
    (Widget._border_title, a Content), which the border's render reads."""
    if widget.border_title == title:
        return
    if not widget.is_mounted or not widget.outer_size:
        widget.border_title = title  # not laid out yet: its first paint draws the whole border
        return
    widget._border_title = widget.render_str(title).expand_tabs(4).split()[0]
    # refresh() takes regions relative to the content; the border lies above and left of it.
    offset = widget.content_offset
    widget.refresh(Region(-offset.x, -offset.y, widget.outer_size.width, 1))
