"""The words of the reports a learner reads (`fastpost lab`, `fastpost bench`), in English
and Spanish.

A dictionary, not gettext: a few dozen sentences, two languages, and the numbers in them
are formatted by the same code in both (`--lang es` changes words, never figures). A key
missing in a language falls back to English; `tests/test_messages.py` checks that both
languages have every key and the same placeholders.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

import typer

Lang = Literal["en", "es"]
LANGUAGES: tuple[Lang, ...] = ("en", "es")

# The `--lang` option of every command whose report a learner reads.
LangOption = Annotated[
    str | None,
    typer.Option(
        help="Language of the report: en or es (default: from LC_ALL, LC_MESSAGES, LANG). "
        "The figures are the same."
    ),
]


def resolve_language(option: str | None = None) -> Lang:
    """`option` when given, else the locale's language (LC_ALL, LC_MESSAGES, LANG: POSIX's
    order of precedence); English unless it is Spanish."""
    candidates = [option] if option else [os.environ.get(v) for v in _LOCALE_VARIABLES]
    for value in candidates:
        if value:
            return "es" if value.lower().startswith("es") else "en"
    return "en"


_LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")


def text(key: str, lang: Lang, /, **params: object) -> str:
    """The message `key` in `lang`, with `params` put in its placeholders."""
    entry = CATALOGUE[key]
    return (entry.get(lang) or entry["en"]).format(**params)


def has(key: str) -> bool:
    return key in CATALOGUE


CATALOGUE: dict[str, dict[Lang, str]] = {
    # --- fastpost lab: the frame -------------------------------------------------------
    "lab.title": {
        "en": "fastpost lab ({where}, median of {repeat})",
        "es": "laboratorio de fastpost ({where}, mediana de {repeat})",
    },
    "lab.col.experiment": {"en": "experiment", "es": "experimento"},
    "lab.col.variant": {"en": "variant", "es": "variante"},
    "lab.col.size": {"en": "size / page", "es": "tamaño / página"},
    "lab.col.queries": {"en": "queries", "es": "consultas"},
    "lab.col.time": {"en": "time (ms)", "es": "tiempo (ms)"},
    "lab.col.memory": {"en": "memory (KiB)", "es": "memoria (KiB)"},
    "lab.col.loop_lag": {"en": "loop lag p99 (ms)", "es": "retraso del bucle p99 (ms)"},
    "lab.col.ratio": {"en": "ratio (of what)", "es": "razón (de qué)"},
    "lab.col.detail": {"en": "detail", "es": "detalle"},
    "lab.fix": {"en": "fix", "es": "arreglo"},
    "lab.same_statement": {"en": "same statement", "es": "misma sentencia"},
    "lab.why": {"en": "why", "es": "por qué"},
    "lab.ratio_of": {"en": "ratio of {what}", "es": "razón de {what}"},
    "lab.ratio_legend": {
        "en": "ratio: the variant's figure divided by the fix's at the same size "
        "(time unless the row says otherwise)",
        "es": "razón: la cifra de la variante dividida por la del arreglo al mismo tamaño "
        "(tiempo salvo que la fila diga otra cosa)",
    },
    "lab.database": {"en": "database {database} ({how})", "es": "base de datos {database} ({how})"},
    "lab.reused": {"en": "reused", "es": "reutilizada"},
    "lab.seeded": {"en": "seeded in {seconds} s", "es": "poblada en {seconds} s"},
    "lab.json_written": {"en": "JSON written to {path}", "es": "JSON escrito en {path}"},
    "ratio.time": {"en": "time", "es": "tiempo"},
    "ratio.p99 loop lag": {"en": "p99 loop lag", "es": "retraso p99 del bucle"},
    "ratio.peak memory": {"en": "peak memory", "es": "memoria pico"},
    # --- fastpost lab: each experiment's title, why and verdict --------------------------
    "lab.n_plus_one.title": {
        "en": "1. N+1: posts with their authors",
        "es": "1. N+1: posts con sus autores",
    },
    "lab.n_plus_one.why": {
        "es": "cada consulta es un viaje de ida y vuelta y un paso por el driver y el ORM; "
        "N+1 lo paga por fila",
    },
    "lab.n_plus_one.verdict": {
        "es": "{anti_queries} sentencias en vez de {fix_queries}: {ratio:.1f}x el tiempo "
        "del JOIN para {posts} posts",
    },
    "lab.gather.title": {
        "es": "2. awaits secuenciales vs asyncio.gather (resumen de usuario)",
    },
    "lab.gather.why": {
        "es": "lecturas independientes esperan a la base de datos una tras otra salvo que "
        "se solapen",
    },
    "lab.gather.verdict": {
        "es": "secuencial tarda {ratio:.2f}x el tiempo de gather ({dialect}); mismos datos: "
        "{same_data}, mismas sentencias: {same_sql}",
    },
    "lab.membership.title": {"es": "3. Pertenencia: lista vs conjunto"},
    "lab.membership.why": {
        "es": "`x in lista` compara con cada elemento (O(n)); un set calcula un hash (O(1))",
    },
    "lab.membership.verdict": {
        "es": "con {items:,} elementos buscar en una lista tarda {ratio:,.0f}x buscar en un "
        "set; el set ocupa más memoria (su propia tabla hash)",
    },
    "lab.pagination.title": {"es": "4. Paginación: OFFSET vs keyset"},
    "lab.pagination.why": {
        "es": "OFFSET lee y descarta cada fila anterior a la página; un cursor entra en el "
        "índice donde terminó la página anterior",
    },
    "lab.pagination.verdict": {
        "es": "en la {page} OFFSET tarda {ratio:.1f}x la consulta keyset ({total:,} posts "
        "publicados, {limit} por página)",
    },
    "lab.pagination.beyond": {
        "en": "{total:,} published posts make {pages:,} pages of {limit}; seed more "
        "(--posts {posts:,}) to measure this page",
        "es": "{total:,} posts publicados dan {pages:,} páginas de {limit}; genera más "
        "(--posts {posts:,}) para medir esta página",
    },
    "lab.cpu_bound.note": {
        "en": "Argon2 time_cost={time}, memory={memory} KiB, parallelism={lanes} "
        "(fastpost's defaults); lag is how late a task sleeping 1 ms woke up",
        "es": "Argon2 time_cost={time}, memory={memory} KiB, parallelism={lanes} (los valores "
        "por defecto de fastpost); el retraso es cuánto tarde despertó una tarea que dormía 1 ms",
    },
    "lab.gather.note_sqlite": {
        "en": "SQLite: the three reads hit one local file with no network wait; each reader "
        "connection has its own aiosqlite thread, so gather overlaps little beyond what those "
        "threads and the GIL allow.",
        "es": "SQLite: las tres lecturas van a un archivo local sin esperas de red; cada "
        "conexión de lectura tiene su hilo de aiosqlite, así que gather solapa poco más de lo "
        "que esos hilos y el GIL permiten.",
    },
    "lab.gather.note_postgresql": {
        "en": "PostgreSQL: each read is a round trip to the server, and gather overlaps them; "
        "on a local server a round trip is a fraction of a millisecond, so the gain grows with "
        "the distance to the database.",
        "es": "PostgreSQL: cada lectura es un viaje de ida y vuelta al servidor y gather los "
        "solapa; con un servidor local un viaje es una fracción de milisegundo, así que la "
        "ganancia crece con la distancia a la base de datos.",
    },
    "lab.outbound_http.note": {
        "en": "ideal: {delay:g} ms when all {calls} calls overlap, {serial:g} ms one after "
        "another; asyncio.to_thread runs at most min(32, CPUs + 4) at once",
        "es": "ideal: {delay:g} ms si las {calls} llamadas se solapan, {serial:g} ms una tras "
        "otra; asyncio.to_thread ejecuta como mucho min(32, CPUs + 4) a la vez",
    },
    "lab.pagination.verdict_none": {
        "en": "no page past the first within the data (page 1 runs the same statement either "
        "way): seed more posts",
        "es": "ninguna página después de la primera dentro de los datos (la página 1 ejecuta "
        "la misma sentencia en ambos casos): genera más posts",
    },
    "lab.index.title": {"es": "5. Consulta sin su índice vs con él"},
    "lab.index.why": {
        "es": "sin índice en la columna filtrada la base de datos lee todas las filas para "
        "encontrar unas pocas",
    },
    "lab.index.verdict": {
        "es": "los {rows} posts más recientes de un autor tardan {ratio:.1f}x sin el índice "
        "({total:,} posts en la tabla)",
    },
    "lab.cache.title": {"es": "6. Caché fría vs caliente: GET /posts/{{id}}"},
    "lab.cache.why": {
        "es": "una caché caliente responde desde memoria: sin consulta, sin serializar",
    },
    "lab.cache.verdict": {
        "es": "fría: {cold_queries} consulta y {ratio:.1f}x el tiempo de la caliente, que hizo "
        "{warm_queries} consultas{tier_note}",
    },
    "lab.cache.tier1_only": {
        "en": " (no --redis-url: tier 1 only)",
        "es": " (sin --redis-url: solo nivel 1)",
    },
    "lab.cpu_bound.title": {"es": "7. Trabajo de CPU: hash de contraseñas"},
    "lab.cpu_bound.why": {
        "es": "el trabajo de CPU en el bucle de eventos detiene todas las demás peticiones "
        "mientras dura",
    },
    "lab.cpu_bound.verdict": {
        "es": "en el bucle una tarea concurrente esperó hasta {lag_max:.0f} ms (p99 "
        "{lag_p99:.0f} ms); en un hilo p99 {fix_lag:.1f} ms",
    },
    "lab.streaming.title": {"es": "8. Muchas filas: cargar todo vs paginar vs stream"},
    "lab.streaming.why": {
        "es": "tener todas las filas a la vez cuesta memoria en proporción a la tabla; "
        "páginas y streams guardan un lote",
    },
    "lab.streaming.verdict": {
        "es": "cargar {size} de una vez llega a {ratio:.0f}x la memoria de leerlas en stream "
        "en lotes de {batch} ({everything:,} vs {streamed:,} bytes)",
    },
    "lab.outbound_http.title": {
        "es": "9. HTTP saliente: requests bloqueante vs httpx.AsyncClient",
    },
    "lab.outbound_http.why": {
        "es": "una llamada bloqueante dentro de código async detiene el bucle de eventos "
        "durante todo el viaje de ida y vuelta",
    },
    "lab.outbound_http.verdict": {
        "es": "requests bloqueante tardó {ratio:.1f}x el tiempo de httpx y retuvo el bucle "
        "de eventos hasta {lag_max:.0f} ms",
    },
    "yes": {"en": "yes", "es": "sí"},
    "no": {"en": "NO", "es": "NO"},
    # --- fastpost bench ----------------------------------------------------------------
    "bench.verdict_pass": {
        "en": "VERDICT: every target met ({passed} of {total})",
        "es": "VEREDICTO: se cumplen todos los objetivos ({passed} de {total})",
    },
    "bench.verdict_fail": {
        "en": "VERDICT: {failed} of {total} targets FAILED: {names}",
        "es": "VEREDICTO: {failed} de {total} objetivos NO se cumplen: {names}",
    },
    "bench.verdict_exit": {
        "en": "(exit status 0 all the same, for exploring; --fail-on-target makes it 3)",
        "es": "(el estado de salida es 0 igualmente, para explorar; con --fail-on-target es 3)",
    },
    "bench.report_written": {
        "en": "report written to {folder}/report.json and report.md",
        "es": "informe escrito en {folder}/report.json y report.md",
    },
    "bench.target_failed": {"en": "target failed", "es": "objetivo no cumplido"},
    "bench.title": {
        "en": "fastpost bench: {scenario}, {workers} worker(s), {database}",
        "es": "fastpost bench: {scenario}, {workers} worker(s), {database}",
    },
    "bench.worker": {
        "en": "worker {pid}: {cpu:.0%} of a core, {rss:.0f} MB RSS",
        "es": "worker {pid}: {cpu:.0%} de un núcleo, {rss:.0f} MB de RSS",
    },
    "bench.metrics_line": {
        "en": "/metrics over the wrk run: {queries:,.0f} queries ({per_request:.2f}/request, "
        "{ms_per_request:.2f} ms/request), cache {hits:,.0f} hits / {misses:,.0f} misses "
        "({rate:.0%} hits)",
        "es": "/metrics durante la ejecución wrk: {queries:,.0f} consultas ({per_request:.2f}"
        "/petición, {ms_per_request:.2f} ms/petición), caché {hits:,.0f} aciertos / "
        "{misses:,.0f} fallos ({rate:.0%} aciertos)",
    },
    "bench.group.course": {"en": "course", "es": "curso"},
    "bench.group.ours": {"en": "ours", "es": "nuestros"},
    "bench.course_targets": {"en": "course targets", "es": "objetivos del curso"},
    "bench.our_targets": {"en": "our targets", "es": "nuestros objetivos"},
    "bench.col.target": {"en": "target", "es": "objetivo"},
    "bench.col.limit": {"en": "limit", "es": "límite"},
    "bench.col.measured": {"en": "measured", "es": "medido"},
    "bench.col.verdict": {"en": "verdict", "es": "veredicto"},
    "bench.pass": {"en": "PASS", "es": "CUMPLE"},
    "bench.fail": {"en": "FAIL", "es": "FALLA"},
    "bench.col.run": {"en": "run", "es": "ejecución"},
    "bench.col.req/s": {"en": "req/s", "es": "pet/s"},
    "bench.col.vs baseline": {"en": "vs baseline", "es": "vs referencia"},
    "bench.col.errors (share of attempted)": {
        "en": "errors (share of attempted)",
        "es": "errores (parte de lo intentado)",
    },
    "bench.col.server CPU": {"en": "server CPU", "es": "CPU del servidor"},
    "bench.col.generator CPU": {"en": "generator CPU", "es": "CPU del generador"},
    "bench.col.route": {"en": "route", "es": "ruta"},
    "bench.col.share": {"en": "share", "es": "parte"},
    "bench.col.errors": {"en": "errors", "es": "errores"},
    "target.p50_ms": {"es": "latencia p50 a ritmo fijo, ms"},
    "target.p95_ms": {"es": "latencia p95 a ritmo fijo, ms"},
    "target.p99_ms": {"es": "latencia p99 a ritmo fijo, ms"},
    "target.rps": {"es": "peticiones/s bajo wrk"},
    "target.server_cpu": {"es": "CPU del servidor a ritmo fijo, parte de sus núcleos"},
    "target.error_rate": {"es": "errores / peticiones intentadas (wrk y ritmo fijo)"},
    "target.capacity_rps": {"es": "capacidad con el límite de p99, pet/s"},
    "target.capacity_ratio": {"es": "capacidad / la capacidad de la referencia"},
}
