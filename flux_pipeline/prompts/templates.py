"""Prompts as Jinja2 templates over their row's attributes (opt-in: see :mod:`.table`).

Rendering runs in Jinja2's sandbox with ``StrictUndefined``: a template reaches no Python
object beyond the attribute strings it is given, and a name the row does not have is an error,
never an empty string. Each distinct template text is compiled once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

_ENV: Final = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
)


class TemplateProblem(ValueError):
    """A template that does not compile or render; the message says why."""


class PromptTemplates:
    """Compiles each template text once, and renders rows with it."""

    def __init__(self) -> None:
        self._compiled: dict[str, jinja2.Template | TemplateProblem] = {}

    def compile(self, source: str) -> jinja2.Template:
        """The compiled template; raises :class:`TemplateProblem` on a syntax error."""
        found = self._compiled.get(source)
        if found is None:
            try:
                found = _ENV.from_string(source)
            except jinja2.TemplateSyntaxError as exc:
                found = TemplateProblem(f"Jinja2 syntax error at line {exc.lineno}: {exc.message}")
            self._compiled[source] = found
        if isinstance(found, TemplateProblem):
            raise found
        return found

    def render(self, source: str, attributes: Mapping[str, str]) -> str:
        """``source`` rendered over ``attributes``, stripped; raises :class:`TemplateProblem`
        naming the attribute that is missing, or what else went wrong."""
        template = self.compile(source)
        try:
            return template.render(attributes).strip()
        except jinja2.UndefinedError as exc:
            have = ", ".join(sorted(attributes)) or "none"
            raise TemplateProblem(f"{exc.message} (the row's attributes: {have})") from None
        except jinja2.TemplateError as exc:  # the sandbox refused something, a bad filter, ...
            raise TemplateProblem(f"cannot render the template: {exc}") from None
        except Exception as exc:  # e.g. a filter given the wrong kind of value
            raise TemplateProblem(f"cannot render ({type(exc).__name__}: {exc})") from None


def placeholders(source: str) -> set[str]:
    """The names ``source`` reads from its context; raises :class:`TemplateProblem` on a syntax
    error."""
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(source)))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"Jinja2 syntax error at line {exc.lineno}: {exc.message}") from None
