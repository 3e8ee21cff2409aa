"""The site's pages, one module each; every ``write_*`` renders its page(s) with a `Renderer`."""

from convscope.report.pages import (embedding, filters, glossary, neighbours, overview,
                                    performance, stages, units)

__all__ = ["embedding", "filters", "glossary", "neighbours", "overview", "performance", "stages",
           "units"]
