"""The organization's domain vocabulary, in one pure package every service imports: privilege
depths, ownership and the record-access rule (``org``), attribute types and the stored form of
their values (``attributes``), and the custom-filter operators (``operators``). No I/O here."""
