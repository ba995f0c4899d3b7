"""The style engine: everything between the instance-norm core and the apps.

Library code only: options in, values out; nothing here prints or parses arguments, and errors
name arguments and config fields, never command-line flags. See docs/ARCHITECTURE.md.
"""
