"""A local stand-in for the parts of Microsoft Graph that bookingcache uses."""
