"""The queue role: every Beanstalkd call, job operations, signed bodies, a local server."""
