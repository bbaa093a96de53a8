"""Text that came from files, users or DICOM headers, for st.markdown / st.caption / st.write: shown as
typed, never as Markdown (a project named ``[x](http://evil)`` or ``![](http://tracker)`` would render a
link or fetch an image), never as HTML, emoji shortcode or icon."""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=])")


def md(text: object) -> str:
    """``text`` with every Markdown and HTML special character backslash-escaped, on one line."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))
