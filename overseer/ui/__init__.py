"""``overseer ui``: a web page to watch and operate graphs, served on 127.0.0.1.

``server`` (the HTTP server, its token and its checks), ``reads`` (what the pages read,
over the CLI's ``Client``), ``static/`` (the page: plain HTML, CSS and JavaScript, with
its layout library vendored from npm; no build step).
"""
