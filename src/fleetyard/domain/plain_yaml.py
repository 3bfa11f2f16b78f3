"""YAML without aliases, for every document Fleetyard reads (pipelines, inventories, queue and
health configs, job specs).

An alias (``*name``) repeats what its anchor holds; nested, a few hundred bytes of them expand to
gigabytes (a "billion laughs"). None of these documents needs one, so an alias is refused where it
appears, with its line, as a YAML error every reader already reports as the document's fault.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["PlainLoader", "load"]


class PlainLoader(yaml.SafeLoader):
    """:class:`yaml.SafeLoader` that refuses aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                f"alias *{event.anchor} is not accepted (aliases can expand without bound): "
                "write the value out in full",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def load(text: str) -> Any:
    """The document ``text`` holds, like :func:`yaml.safe_load` but refusing aliases."""
    return yaml.load(text, Loader=PlainLoader)
