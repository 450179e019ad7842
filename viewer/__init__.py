"""The PACS-lite web application: DICOMweb (QIDO-RS, WADO-RS, STOW-RS) and pages.

Build it with :func:`viewer.app.create_app`; serve it with :mod:`viewer.http_server`.
"""
