"""Import of past events from files: `beacon import FILE...`.

`readers` streams records (lines, CSV records) out of plain or gzip files; `formats` and
`columns` map each record to an `ImportRow` (an event and the person it is about) or a
`BadRow`; `runner` validates rows, groups each batch per person into `TrackCommand`s and
commits them through `Writer.commit`, recording progress in a resume `state` file; `cli`
is the typer command.
"""
