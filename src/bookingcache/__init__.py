"""bookingcache: a booking cache for meeting-room availability fed by Microsoft 365."""
