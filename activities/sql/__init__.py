"""The project's one SQL layer: the database (:mod:`.database`), every table in one metadata (:mod:`.schema`), the
migrations that build it (:mod:`.migrate`, ``migrations/``), and one store module per owner of tables."""
