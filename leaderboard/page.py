"""The HTML page shell: inlined assets, a strict Content-Security-Policy, safe JSON embedding.

Assets are inlined (not linked) so a page works from `file://` as well as from any static
host, and so the CSP can allow exactly the build's own script and stylesheet by hash:
even if a run-supplied string escaped escaping, the browser would refuse to run it.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from html import escape
from importlib import resources
from typing import Any

_JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                 0x2028: "\\u2028", 0x2029: "\\u2029"}


def embed_json(obj: Any) -> str:
    """JSON safe inside `<script type="application/json">`: no `</script>` or `<!--` can form."""
    return json.dumps(obj, sort_keys=True, default=str, allow_nan=False).translate(_JSON_ESCAPES)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@dataclass(frozen=True)
class Assets:
    """The stylesheet and script every page inlines, read once per build."""

    css: str
    js: str

    @classmethod
    def load(cls) -> "Assets":
        root = resources.files(__package__)
        from slimbench.leaderboard.plots import family_css
        return cls(css=root.joinpath("style.css").read_text(encoding="utf-8") + family_css() + "\n",
                   js=root.joinpath("app.js").read_text(encoding="utf-8"))

    def shell(self, title: str, body: str, script: bool = False, data: Any = None) -> str:
        """A complete page; `script` adds the app (and `data` as its embedded JSON)."""
        scripts = _sha256(self.js) if script else "'none'"
        csp = (f"default-src 'none'; style-src {_sha256(self.css)}; script-src {scripts}; "
               "img-src 'none'; base-uri 'none'; form-action 'none'")
        tail = ""
        if script:
            tail = (f'<script type="application/json" id="lb-data">{embed_json(data or {})}</script>'
                    f"<script>{self.js}</script>")
        return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<meta name="referrer" content="no-referrer"><title>{escape(title)}</title>'
                f"<style>{self.css}</style></head><body>{body}{tail}</body></html>\n")
