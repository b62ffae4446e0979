"""pytest-bdd step definitions, grouped by domain. Thin: parse, ask the engine, assert a verdict."""
