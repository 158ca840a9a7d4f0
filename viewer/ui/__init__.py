"""The Qt user interface (PySide6): the only layer that imports Qt.

    viewport_model  ViewportModel: the state of one 2D view, pure Python (no Qt), emitting Changed events
    viewport        Viewport: paints the model's slice, forwards mouse and keys; lazy decode in workers
    tag_browser     TagBrowser: the current image's header as a filterable table
    browser         Browser: source selector, study search, series with thumbnails
    pacs_panel      PacsPanel: query a node or a cluster profile; its retrievals are jobs of the service
    retrieval_service RetrievalService: sources, health monitor, event log and retrieval jobs, as Qt signals
    health_dock     HealthPanel: the "PACS health" dock (state per address, event log)
    banner          FailoverBanner: the in-window bar shown during an outage, with Retry
    profile_dialog  ProfileDialog: add/edit/remove the user's cluster profiles
    settings_dialog SettingsDialog: PACS nodes (add/edit/remove/test) and retrieval defaults
    main_window     MainWindow: the docks, toolbar, menus, import and demo jobs
    app             main(): the ``mifas-viewer`` command
    workers         TaskRunner: bounded, cancellable background tasks with GUI-thread callbacks
    events          EventEmitter: the models' tiny observer mechanism (no Qt)
    search_fields   SearchFields: the study search form (local library and PACS)
    thumbnails      render_thumbnail (worker side) and a bounded cache
    import_summary  ImportSummaryDialog: counts and every failed file with its reason
    series_source   open_series(library, uid): index -> ordered frames -> SeriesImages
    excepthook      the last-resort handler: log, show a sentence, keep running

Nothing here is imported by the lower layers; import submodules directly (this package imports no Qt itself,
so ``viewer.ui.viewport_model`` and ``viewer.ui.app --version`` stay Qt-free).
"""
