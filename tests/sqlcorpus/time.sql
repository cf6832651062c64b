-- Time: eventTime (a timestamp, UTC) against string and TIMESTAMP literals, current_timestamp/now() in
-- conditions that do not depend on when the test runs, INTERVAL arithmetic, date, date_add, date_diff,
-- date_trunc, date_format, from_iso8601_timestamp, to_iso8601, year..second, day_of_week, day_of_year,
-- week and CAST(eventTime AS DATE).

-- name: time_string_literal_window
-- Events in a window written as plain strings, the CloudTrail Lake console's way.
SELECT eventsource, count(*) AS n
FROM $EDS_ID
WHERE eventtime >= '2024-03-02 00:00:00' AND eventtime < '2024-03-02 12:00:00'
GROUP BY eventsource;

-- name: time_timestamp_literal_window
-- The same kind of window with TIMESTAMP literals and BETWEEN.
SELECT eventname, count(*) AS n
FROM $EDS_ID
WHERE eventTime BETWEEN TIMESTAMP '2024-03-01 08:00:00' AND TIMESTAMP '2024-03-01 17:59:59'
  AND readonly = false
GROUP BY eventname;

-- name: time_ext_years
-- The real data spans many years: events per year and month.
-- dataset: ext
SELECT year(eventtime) AS y, month(eventtime) AS m, count(*) AS n
FROM $EDS_ID
WHERE eventtime > TIMESTAMP '2017-01-01 00:00:00'
GROUP BY 1, 2;

-- name: time_hourly_callers
-- Top callers per hour: calls per principal per hour bucket.
SELECT date_trunc('hour', eventtime) AS hour, useridentity.arn AS principal, count(*) AS calls
FROM $EDS_ID
WHERE eventtime < TIMESTAMP '2024-03-01 06:00:00' AND useridentity.arn IS NOT NULL
GROUP BY 1, 2
HAVING count(*) >= 5;

-- name: time_daily_counts_cast_date
-- Events per day, CAST(eventTime AS DATE) and date() agree.
SELECT CAST(eventTime AS DATE) AS day, date(eventtime) AS day2, count(*) AS n
FROM $EDS_ID
GROUP BY 1, 2;

-- name: time_parts
-- year .. second of each login.
SELECT eventid, year(eventtime) AS y, month(eventtime) AS mo, day(eventtime) AS d, hour(eventtime) AS h,
       minute(eventtime) AS mi, second(eventtime) AS s
FROM $EDS_ID
WHERE eventname IN ('ConsoleLogin', 'CreateUser', 'DeleteBucket');

-- name: time_day_of_week_activity
-- Weekend activity: ISO day of week (Monday = 1 .. Sunday = 7) and day of year.
SELECT day_of_week(eventtime) AS dow, day_of_year(eventtime) AS doy, count(*) AS n
FROM $EDS_ID
GROUP BY 1, 2;

-- name: time_iso_week
-- ISO week numbers, including days at a year boundary.
SELECT week(eventtime) AS wk, count(*) AS n, week(TIMESTAMP '2021-01-03 12:00:00') AS wk_2021_01_03,
       week(DATE '2024-12-30') AS wk_2024_12_30, day_of_week(DATE '2024-03-03') AS sunday
FROM $EDS_ID
GROUP BY 1;

-- name: time_date_add
-- Calls within one hour after a console login of the same principal.
SELECT l.useridentity.arn AS who, count(*) AS calls_after_login
FROM $EDS_ID l JOIN $EDS_ID e
  ON e.useridentity.arn = l.useridentity.arn
 AND e.eventtime > l.eventtime
 AND e.eventtime <= date_add('hour', 1, l.eventtime)
WHERE l.eventname = 'ConsoleLogin'
GROUP BY l.useridentity.arn;

-- name: time_interval_arithmetic
-- INTERVAL arithmetic in projections and filters.
SELECT eventid, eventtime + INTERVAL '90' MINUTE AS plus_90m, eventtime - INTERVAL '1' DAY AS minus_1d,
       eventtime + INTERVAL '2' HOUR AS plus_2h
FROM $EDS_ID
WHERE eventname = 'ConsoleLogin' OR eventname = 'DeleteTrail';

-- name: time_date_diff_units
-- date_diff counts whole units: 23:00 to 01:00 next day is 0 days; units seconds .. years.
SELECT date_diff('day', TIMESTAMP '2024-01-01 23:00:00', TIMESTAMP '2024-01-02 01:00:00') AS d0,
       date_diff('day', TIMESTAMP '2024-01-01 00:00:00', TIMESTAMP '2024-01-05 12:00:00') AS d4,
       date_diff('hour', TIMESTAMP '2024-01-01 00:59:00', TIMESTAMP '2024-01-01 02:00:00') AS h1,
       date_diff('minute', TIMESTAMP '2024-01-01 00:00:30', TIMESTAMP '2024-01-01 00:02:00') AS m1,
       date_diff('second', TIMESTAMP '2024-01-01 00:00:00', TIMESTAMP '2024-01-01 00:01:01') AS s61,
       date_diff('month', DATE '2024-01-31', DATE '2024-03-30') AS mo1,
       date_diff('year', DATE '2020-06-01', DATE '2024-05-31') AS y3,
       date_diff('day', TIMESTAMP '2024-01-05 00:00:00', TIMESTAMP '2024-01-01 00:00:00') AS neg;

-- name: time_session_length
-- Time from session creation to each call, in minutes, for the longest sessions.
SELECT useridentity.arn AS session,
       max(date_diff('minute', useridentity.sessioncontext.attributes.creationdate, eventtime)) AS max_minutes
FROM $EDS_ID
WHERE useridentity.sessioncontext.attributes.creationdate IS NOT NULL
GROUP BY useridentity.arn;

-- name: time_current_timestamp_robust
-- Nothing happens in the future: every event is before now(), and at least 0 days old.
SELECT count(*) AS n, count_if(eventtime <= current_timestamp) AS past,
       count_if(date_diff('day', eventtime, now()) >= 0) AS not_future
FROM $EDS_ID
WHERE eventtime < now() AND eventtime > current_timestamp - INTERVAL '36500' DAY;

-- name: time_date_format
-- date_format with MySQL-style specifiers.
SELECT date_format(eventtime, '%Y-%m-%d %H:%i:%s') AS full_ts, date_format(eventtime, '%a %b %e') AS short_day,
       date_format(eventtime, '%W %M %Y') AS long_day, date_format(eventtime, '%H:00') AS hour_label
FROM $EDS_ID
WHERE eventname = 'ConsoleLogin';

-- name: time_date_format_group
-- Hour-of-day profile of human console activity, grouped on a formatted label.
SELECT date_format(eventtime, '%H') AS hour_of_day, count(*) AS n
FROM $EDS_ID
WHERE useragent LIKE 'Mozilla%'
GROUP BY date_format(eventtime, '%H');

-- name: time_from_iso8601
-- from_iso8601_timestamp bounds (with zone Z) against eventTime.
SELECT count(*) AS n
FROM $EDS_ID
WHERE eventtime >= from_iso8601_timestamp('2024-03-02T06:00:00Z')
  AND eventtime < from_iso8601_timestamp('2024-03-02T07:30:00.000Z');

-- name: time_to_iso8601
-- to_iso8601 of eventTime (timestamp(3)) and of a date.
SELECT eventid, to_iso8601(eventtime) AS iso, to_iso8601(CAST(eventtime AS DATE)) AS iso_day
FROM $EDS_ID
WHERE eventname IN ('ConsoleLogin', 'CreateAccessKey');

-- name: time_iso_roundtrip
-- from_iso8601_timestamp then to_iso8601, and literal values.
SELECT to_iso8601(from_iso8601_timestamp('2024-03-02T10:15:30Z')) AS utc,
       from_iso8601_timestamp('2024-03-02T10:15:30+02:00') AS with_offset,
       CAST(from_iso8601_timestamp('2024-03-02T23:30:00Z') AS DATE) AS utc_day,
       to_iso8601(DATE '2024-02-29') AS leap_day;

-- name: time_date_trunc_units
-- date_trunc by minute, day, week (Monday), month and year.
SELECT date_trunc('minute', eventtime) AS mi, date_trunc('day', eventtime) AS d, date_trunc('week', eventtime) AS w,
       date_trunc('month', eventtime) AS mo, date_trunc('year', eventtime) AS y
FROM $EDS_ID
WHERE eventname = 'ConsoleLogin';

-- name: time_first_last_per_day
-- First and last event of each day per region.
SELECT awsregion, date(eventtime) AS day, min(eventtime) AS first_event, max(eventtime) AS last_event
FROM $EDS_ID
WHERE awsregion IS NOT NULL
GROUP BY 1, 2;

-- name: time_extract
-- EXTRACT forms: hour, day of week (ISO in Trino), year.
SELECT extract(hour FROM eventtime) AS h, extract(dow FROM eventtime) AS dow, extract(year FROM eventtime) AS y,
       count(*) AS n
FROM $EDS_ID
GROUP BY 1, 2, 3;
