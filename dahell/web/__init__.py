"""Static files of the status page, served by dahell.http."""
