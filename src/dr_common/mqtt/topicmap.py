"""Topic templates with a `{venId}` placeholder, for bus topics and MQTT topics alike.

A template is a topic whose segments may include one `{venId}` segment:
`ven/cmd/{venId}` formats to `ven/cmd/ven-7`, subscribes as the MQTT filter `ven/cmd/+` or the bus prefix
`ven/cmd/`, and matches `ven/cmd/ven-7` back to `ven-7`. A template without a placeholder names one topic.
"""

from __future__ import annotations

from dataclasses import dataclass

PLACEHOLDER = "{venId}"


class TemplateError(ValueError):
    """A topic template that cannot be used."""


@dataclass(frozen=True)
class TopicTemplate:
    """An MQTT or bus topic with at most one whole-segment `{venId}` placeholder."""

    text: str

    def __post_init__(self) -> None:
        text = self.text
        if not isinstance(text, str) or not text or text != text.strip():
            raise TemplateError(f"topic template must be a non-empty string without spaces around it; got {text!r}")
        if any(ch in text for ch in "#+\0"):
            raise TemplateError(f"topic template {text!r} must not contain MQTT wildcards or NUL")
        segments = text.split("/")
        if "" in segments:
            raise TemplateError(f"topic template {text!r} has an empty segment")
        count = sum(1 for seg in segments if PLACEHOLDER in seg)
        if count > 1:
            raise TemplateError(f"topic template {text!r} has more than one {PLACEHOLDER}")
        if count == 1 and PLACEHOLDER not in segments:
            raise TemplateError(f"{PLACEHOLDER} must be a whole segment in {text!r}")
        stripped = text.replace(PLACEHOLDER, "")
        if "{" in stripped or "}" in stripped:
            raise TemplateError(f"topic template {text!r} has a placeholder other than {PLACEHOLDER}")

    @property
    def has_ven_id(self) -> bool:
        """True when the template has the `{venId}` placeholder."""
        return PLACEHOLDER in self.text

    @property
    def _index(self) -> int:
        return self.text.split("/").index(PLACEHOLDER)

    def format(self, ven_id: str | None) -> str:
        """The concrete topic; `ven_id` is required when the template has a placeholder."""
        if not self.has_ven_id:
            return self.text
        if not ven_id or "/" in ven_id or "+" in ven_id or "#" in ven_id:
            raise TemplateError(f"cannot put venId {ven_id!r} into {self.text!r}")
        return self.text.replace(PLACEHOLDER, ven_id)

    def bind(self, ven_id: str | None) -> TopicTemplate:
        """The template with its placeholder filled (for a VEN-side bridge serving one venId)."""
        return TopicTemplate(self.format(ven_id)) if (self.has_ven_id and ven_id) else self

    def mqtt_filter(self) -> str:
        """The MQTT subscription filter: the placeholder becomes `+`."""
        return self.text.replace(PLACEHOLDER, "+")

    def bus_prefix(self) -> str:
        """The VOLTTRON subscription prefix: everything before the placeholder (or the whole topic).

        VOLTTRON subscriptions are prefix matches, so every delivery must still be checked with `match`."""
        if not self.has_ven_id:
            return self.text
        return self.text[: self.text.index(PLACEHOLDER)]

    def match(self, topic: str) -> str | None:
        """The venId a concrete topic carries ('' for a matching template without placeholder), else None."""
        if not self.has_ven_id:
            return "" if topic == self.text else None
        want = self.text.split("/")
        got = topic.split("/")
        if len(want) != len(got):
            return None
        index = self._index
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            if i != index and w != g:
                return None
        ven_id = got[index]
        return ven_id or None

    def __str__(self) -> str:
        return self.text
