"""The secure data environment: people, projects, jobs, an output airlock and an audit trail.

"Code goes to the data": researchers submit approved operations that run here as background
jobs; nothing leaves without automated disclosure checks and two output checkers' approval;
every login, query, job, file view, request and decision lands in a hash-chained audit log.
"""
