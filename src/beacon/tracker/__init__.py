"""The web tracker: `tracker.js` (package data) and the route serving it at `/tracker.js`."""
