"""Engine sets in an OCI registry: ``client`` is the transport (one repository of one
registry, requests, login, errors for people), ``sets`` the mapping between an engine set and
an artifact (push, the sets a repository holds, pull). Neither knows which set a host gets:
that is ``pipeline.deploy``'s.
"""
