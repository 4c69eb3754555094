-- The differential check's corpus (test_differential.py). Each entry starts with
-- "-- ordinary: title" or "-- adversarial: title"; the statement follows.
-- Ordinary entries are what analysts type; adversarial ones try to get at
-- rows or values the rules hide. Every statement must be deterministic: a
-- LIMIT comes with an ORDER BY on a unique key.

-- ordinary: count people
SELECT count(*) FROM people
-- ordinary: all columns ordered
SELECT * FROM people ORDER BY id
-- ordinary: select list
SELECT id, name, region FROM people ORDER BY id
-- ordinary: filter on plain column
SELECT id, name FROM people WHERE dept_id = 2 ORDER BY id
-- ordinary: filter on masked column equals mask
SELECT count(*) FROM people WHERE ssn = '****'
-- ordinary: filter on masked column like
SELECT count(*) FROM people WHERE email LIKE 'a%'
-- ordinary: masked column in select
SELECT id, ssn, email, phone FROM people ORDER BY id
-- ordinary: group by region
SELECT region, count(*) FROM people GROUP BY region ORDER BY region
-- ordinary: group by dept
SELECT dept_id, count(*) AS n FROM people GROUP BY dept_id ORDER BY dept_id NULLS FIRST
-- ordinary: having
SELECT dept_id, count(*) FROM people GROUP BY dept_id HAVING count(*) > 3 ORDER BY dept_id NULLS LAST
-- ordinary: distinct regions
SELECT DISTINCT region FROM people
-- ordinary: distinct masked
SELECT DISTINCT ssn FROM people
-- ordinary: count distinct email
SELECT count(DISTINCT email) FROM people
-- ordinary: order by limit
SELECT id, name FROM people ORDER BY name LIMIT 5
-- ordinary: order by desc offset
SELECT id FROM people ORDER BY id DESC LIMIT 5 OFFSET 3
-- ordinary: fetch first
SELECT id FROM people ORDER BY id FETCH FIRST 4 ROWS ONLY
-- ordinary: inner join orders
SELECT p.name, o.id, o.amount FROM people p JOIN orders o ON o.person_id = p.id ORDER BY o.id
-- ordinary: left join orders count
SELECT p.id, count(o.id) FROM people p LEFT JOIN orders o ON o.person_id = p.id GROUP BY p.id ORDER BY p.id
-- ordinary: right join
SELECT o.id, p.name FROM people p RIGHT JOIN orders o ON o.person_id = p.id ORDER BY o.id
-- ordinary: full join
SELECT p.id, o.id FROM people p FULL JOIN orders o ON o.person_id = p.id ORDER BY p.id NULLS FIRST, o.id NULLS FIRST
-- ordinary: join depts
SELECT d.name, count(*) FROM people p JOIN depts d ON d.id = p.dept_id GROUP BY d.name ORDER BY d.name
-- ordinary: join using
SELECT count(*) FROM people JOIN depts ON depts.id = people.dept_id
-- ordinary: three-way join
SELECT d.name, sum(o.amount) FROM orders o JOIN people p ON p.id = o.person_id JOIN depts d ON d.id = p.dept_id GROUP BY d.name ORDER BY d.name
-- ordinary: parenthesized join
SELECT p.id, o.id FROM (people p JOIN orders o ON o.person_id = p.id) ORDER BY o.id
-- ordinary: cross join count
SELECT count(*) FROM people CROSS JOIN depts
-- ordinary: self join same dept
SELECT a.id, b.id FROM people a JOIN people b ON a.dept_id = b.dept_id AND a.id < b.id ORDER BY a.id, b.id
-- ordinary: sum amount
SELECT sum(amount) FROM orders
-- ordinary: avg amount per status
SELECT status, avg(amount)::numeric(12,2) FROM orders GROUP BY status ORDER BY status
-- ordinary: min max
SELECT min(amount), max(amount), min(placed_at), max(placed_at) FROM orders
-- ordinary: orders count
SELECT count(*) FROM orders
-- ordinary: orders with null person
SELECT count(*) FROM orders WHERE person_id IS NULL
-- ordinary: orders by month
SELECT date_trunc('month', placed_at) AS m, count(*) FROM orders GROUP BY m ORDER BY m
-- ordinary: orders filter status
SELECT id, amount FROM orders WHERE status = 'paid' ORDER BY id
-- ordinary: orders between
SELECT count(*) FROM orders WHERE amount BETWEEN 100 AND 300
-- ordinary: orders in list
SELECT id FROM orders WHERE status IN ('open', 'shipped') ORDER BY id
-- ordinary: note is null
SELECT count(*) FROM orders WHERE note IS NULL
-- ordinary: coalesce note
SELECT coalesce(note, 'none') AS n, count(*) FROM orders GROUP BY 1 ORDER BY 1
-- ordinary: case expression
SELECT CASE WHEN amount > 500 THEN 'big' ELSE 'small' END AS size, count(*) FROM orders GROUP BY 1 ORDER BY 1
-- ordinary: window row_number
SELECT id, row_number() OVER (ORDER BY id) FROM people ORDER BY id
-- ordinary: window partition rank
SELECT id, dept_id, rank() OVER (PARTITION BY dept_id ORDER BY id) FROM people ORDER BY id
-- ordinary: running total
SELECT id, sum(amount) OVER (ORDER BY id) FROM orders ORDER BY id
-- ordinary: window per person
SELECT person_id, id, sum(amount) OVER (PARTITION BY person_id ORDER BY id) FROM orders WHERE person_id IS NOT NULL ORDER BY person_id, id
-- ordinary: lag
SELECT id, lag(amount) OVER (ORDER BY id) FROM orders ORDER BY id
-- ordinary: ntile
SELECT id, ntile(4) OVER (ORDER BY id) FROM people ORDER BY id
-- ordinary: named window
SELECT id, count(*) OVER w FROM people WINDOW w AS (PARTITION BY dept_id) ORDER BY id
-- ordinary: first value
SELECT DISTINCT dept_id, first_value(id) OVER (PARTITION BY dept_id ORDER BY id) FROM people
-- ordinary: cte simple
WITH n AS (SELECT * FROM people WHERE dept_id = 1) SELECT count(*) FROM n
-- ordinary: cte join
WITH totals AS (SELECT person_id, sum(amount) AS t FROM orders GROUP BY person_id) SELECT p.name, t.t FROM people p JOIN totals t ON t.person_id = p.id ORDER BY p.id
-- ordinary: two ctes
WITH a AS (SELECT id FROM people WHERE active), b AS (SELECT person_id FROM orders) SELECT count(*) FROM a JOIN b ON b.person_id = a.id
-- ordinary: cte named like table
WITH people AS (SELECT 1 AS id) SELECT count(*) FROM people
-- ordinary: recursive cte
WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT count(*) FROM r JOIN people ON people.id = r.n
-- ordinary: materialized cte
WITH m AS MATERIALIZED (SELECT id, region FROM people) SELECT region, count(*) FROM m GROUP BY region
-- ordinary: subquery in where in
SELECT count(*) FROM orders WHERE person_id IN (SELECT id FROM people WHERE active)
-- ordinary: exists
SELECT id FROM people p WHERE EXISTS (SELECT 1 FROM orders o WHERE o.person_id = p.id) ORDER BY id
-- ordinary: not exists
SELECT id FROM people p WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.person_id = p.id) ORDER BY id
-- ordinary: scalar subquery
SELECT id, (SELECT count(*) FROM orders o WHERE o.person_id = p.id) FROM people p ORDER BY id
-- ordinary: subquery in from
SELECT avg(n)::numeric(10,2) FROM (SELECT person_id, count(*) AS n FROM orders GROUP BY person_id) x
-- ordinary: any
SELECT count(*) FROM people WHERE id = ANY (SELECT person_id FROM orders WHERE amount > 600)
-- ordinary: all
SELECT count(*) FROM orders WHERE amount > ALL (SELECT amount FROM orders WHERE status = 'cancelled' AND amount < 50)
-- ordinary: union
SELECT name FROM people WHERE dept_id = 1 UNION SELECT name FROM depts
-- ordinary: union all
SELECT id FROM people UNION ALL SELECT person_id FROM orders WHERE person_id IS NOT NULL
-- ordinary: intersect
SELECT id FROM people INTERSECT SELECT person_id FROM orders
-- ordinary: except
SELECT id FROM people EXCEPT SELECT person_id FROM orders
-- ordinary: lateral
SELECT p.id, l.amount FROM people p CROSS JOIN LATERAL (SELECT amount FROM orders o WHERE o.person_id = p.id ORDER BY amount DESC, o.id LIMIT 1) l ORDER BY p.id
-- ordinary: left join lateral
SELECT p.id, l.n FROM people p LEFT JOIN LATERAL (SELECT count(*) AS n FROM orders o WHERE o.person_id = p.id) l ON true ORDER BY p.id
-- ordinary: cast
SELECT id::text, salary::text, born::text FROM people ORDER BY id
-- ordinary: extract year
SELECT extract(year FROM born) AS y, count(*) FROM people GROUP BY y ORDER BY y
-- ordinary: age filter
SELECT count(*) FROM people WHERE born < DATE '1980-01-01'
-- ordinary: string functions
SELECT upper(name), length(name), substr(name, 1, 3) FROM people ORDER BY id
-- ordinary: concat
SELECT name || ' <' || email || '>' FROM people ORDER BY id
-- ordinary: string_agg
SELECT dept_id, string_agg(name, ',' ORDER BY name) FROM people GROUP BY dept_id ORDER BY dept_id NULLS LAST
-- ordinary: array_agg
SELECT region, array_agg(id ORDER BY id) FROM people GROUP BY region
-- ordinary: json agg
SELECT json_agg(json_build_object('id', id, 'ssn', ssn) ORDER BY id)::text FROM people
-- ordinary: row to json
SELECT row_to_json(p)::text FROM people p ORDER BY id
-- ordinary: whole row
SELECT p FROM people p ORDER BY id
-- ordinary: filter masked column in join
SELECT count(*) FROM people a JOIN people b ON a.email = b.email
-- ordinary: group by masked column
SELECT phone, count(*) FROM people GROUP BY phone
-- ordinary: order by masked column
SELECT id, phone FROM people ORDER BY phone NULLS FIRST, id
-- ordinary: boolean filter
SELECT count(*) FROM people WHERE active
-- ordinary: not active
SELECT id FROM people WHERE NOT active ORDER BY id
-- ordinary: is distinct from
SELECT count(*) FROM people WHERE dept_id IS DISTINCT FROM 3
-- ordinary: null dept
SELECT id FROM people WHERE dept_id IS NULL ORDER BY id
-- ordinary: filter
SELECT count(*) FILTER (WHERE active), count(*) FILTER (WHERE NOT active) FROM people
-- ordinary: percentile
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM orders
-- ordinary: grouping sets
SELECT status, note, count(*) FROM orders GROUP BY GROUPING SETS ((status), (note)) ORDER BY status NULLS LAST, note NULLS LAST
-- ordinary: rollup
SELECT status, count(*) FROM orders GROUP BY ROLLUP (status) ORDER BY status NULLS LAST
-- ordinary: values join
SELECT v.label, count(p.id) FROM (VALUES (1, 'one'), (2, 'two')) v(d, label) LEFT JOIN people p ON p.dept_id = v.d GROUP BY v.label ORDER BY v.label
-- ordinary: generate series join
SELECT g, count(o.id) FROM generate_series(1, 3) g LEFT JOIN orders o ON o.person_id = g GROUP BY g ORDER BY g
-- ordinary: alias columns
SELECT a, b FROM people AS x(a, b) ORDER BY a
-- ordinary: qualified names
SELECT public.people.id FROM public.people ORDER BY 1
-- ordinary: events count
SELECT count(*) FROM events
-- ordinary: events per kind
SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind
-- ordinary: events partition direct
SELECT count(*) FROM events_north
-- ordinary: events other partition
SELECT count(*) FROM events_south
-- ordinary: events partition rows
SELECT id, kind FROM events_east ORDER BY id
-- ordinary: events join people
SELECT p.name, count(*) FROM events e JOIN people p ON p.id = e.person_id GROUP BY p.name ORDER BY p.name
-- ordinary: events only
SELECT count(*) FROM ONLY events
-- ordinary: events by day
SELECT at::date AS d, count(*) FROM events GROUP BY d ORDER BY d
-- ordinary: depts all
SELECT * FROM depts ORDER BY id
-- ordinary: view count
SELECT count(*) FROM people_view
-- ordinary: view group by
SELECT region, count(*) FROM people_view GROUP BY region
-- ordinary: view star
SELECT * FROM people_view ORDER BY id
-- ordinary: view masked column
SELECT DISTINCT ssn FROM people_view
-- ordinary: view filter masked
SELECT count(*) FROM people_view WHERE email = 'x'
-- ordinary: view join depts
SELECT d.name, count(*) FROM people_view v JOIN depts d ON d.id = v.dept_id GROUP BY d.name ORDER BY d.name
-- ordinary: active view
SELECT count(*) FROM active_people
-- ordinary: active view rows
SELECT id, name FROM active_people ORDER BY id
-- ordinary: aggregate view
SELECT * FROM order_totals ORDER BY person_id
-- ordinary: aggregate view sum
SELECT region, sum(total) FROM order_totals GROUP BY region
-- ordinary: nested view
SELECT count(*) FROM big_spenders
-- ordinary: nested view rows
SELECT person_id, total FROM big_spenders ORDER BY person_id
-- ordinary: join view
SELECT dept, count(*) FROM dept_people GROUP BY dept ORDER BY dept
-- ordinary: join view rows
SELECT dept, name, email FROM dept_people ORDER BY name
-- ordinary: barrier view
SELECT count(*) FROM safe_people WHERE id > 10
-- ordinary: barrier view rows
SELECT id, name FROM safe_people ORDER BY id
-- ordinary: ungoverned view
SELECT * FROM dept_view ORDER BY id
-- ordinary: view in cte
WITH v AS (SELECT * FROM people_view WHERE dept_id = 2) SELECT count(*) FROM v
-- ordinary: view in subquery
SELECT count(*) FROM orders WHERE person_id IN (SELECT id FROM active_people)
-- ordinary: view alias columns
SELECT a, b FROM people_view AS v(a, b) ORDER BY a
-- ordinary: view with window
SELECT person_id, rank() OVER (ORDER BY total DESC, person_id) FROM order_totals ORDER BY person_id
-- ordinary: view union table
SELECT id FROM active_people UNION SELECT person_id FROM orders WHERE person_id IS NOT NULL
-- ordinary: view lateral
SELECT v.id, l.n FROM people_view v CROSS JOIN LATERAL (SELECT count(*) AS n FROM orders o WHERE o.person_id = v.id) l ORDER BY v.id
-- ordinary: view whole row
SELECT v FROM active_people v ORDER BY id
-- ordinary: parenthesized view join
SELECT v.id, o.id FROM (people_view v JOIN orders o ON o.person_id = v.id) ORDER BY o.id
-- ordinary: salary is null
SELECT count(*) FROM people WHERE salary IS NULL
-- ordinary: count salary
SELECT count(salary) FROM people
-- ordinary: exists join depts
SELECT name FROM depts d WHERE EXISTS (SELECT 1 FROM people p WHERE p.dept_id = d.id) ORDER BY name
-- ordinary: in values
SELECT id FROM people WHERE id IN (1, 2, 3, 4, 5, 6) ORDER BY id
-- ordinary: like name
SELECT count(*) FROM people WHERE name LIKE '%person-1%'
-- ordinary: ilike
SELECT count(*) FROM people WHERE name ILIKE 'NORTH%'
-- ordinary: regex
SELECT count(*) FROM people WHERE name ~ '-0[1-5]$'
-- ordinary: explicit transaction read
SELECT count(*) FROM orders o JOIN people p ON p.id = o.person_id WHERE p.active AND o.status <> 'cancelled'
-- ordinary: nullif greatest
SELECT id, nullif(dept_id, 1), greatest(dept_id, 3) FROM people ORDER BY id
-- ordinary: round
SELECT round(sum(amount) / 3, 2) FROM orders
-- ordinary: distinct on
SELECT DISTINCT ON (person_id) person_id, id FROM orders WHERE person_id IS NOT NULL ORDER BY person_id, id
-- ordinary: order by expression
SELECT id FROM orders ORDER BY amount * 2 DESC, id LIMIT 10
-- ordinary: limit all
SELECT count(*) FROM (SELECT id FROM people LIMIT ALL) x

-- ordinary: sum of masked salary
SELECT sum(salary) FROM people
-- ordinary: avg of masked salary per dept
SELECT dept_id, avg(salary) FROM people GROUP BY dept_id ORDER BY dept_id NULLS LAST
-- ordinary: salary comparison
SELECT count(*) FROM people WHERE salary > 50000
-- ordinary: hash compare across join
SELECT count(*) FROM dept_people dp JOIN people p ON p.email = dp.email

-- ordinary: view with case window filter
SELECT * FROM rich_view ORDER BY id, rn
-- ordinary: view with case grouped
SELECT zone, count(*), sum(paid) FROM rich_view GROUP BY zone ORDER BY zone
-- ordinary: view with cte
SELECT * FROM cte_view ORDER BY id
-- ordinary: view with union
SELECT kind, count(*) FROM union_view GROUP BY kind ORDER BY kind
-- ordinary: view with union rows
SELECT * FROM union_view ORDER BY kind, id
-- ordinary: view with distinct on
SELECT * FROM latest_order ORDER BY person_id
-- ordinary: view with lateral
SELECT * FROM lateral_view ORDER BY id
-- ordinary: view with casts collate array
SELECT * FROM typed_view ORDER BY id
-- ordinary: view with grouping sets
SELECT * FROM grouped_view ORDER BY dept_id NULLS LAST, region NULLS LAST
-- ordinary: view with exists over governed table
SELECT * FROM exists_view ORDER BY id
-- ordinary: two views joined
SELECT c.id, l.amount FROM cte_view c JOIN lateral_view l ON l.id = c.id ORDER BY c.id

-- adversarial: raw ssn through union with subquery
SELECT ssn FROM (SELECT ssn FROM people) x WHERE ssn LIKE 'SSN%'
-- adversarial: other region by filter
SELECT count(*) FROM people WHERE region <> 'north' AND region <> 'south'
-- adversarial: or true
SELECT name FROM people WHERE region = 'east' OR true
-- adversarial: secrets table
SELECT * FROM secrets
-- adversarial: secrets via view-like subquery
SELECT count(*) FROM (SELECT * FROM secrets) s
-- adversarial: secrets in cte
WITH s AS (SELECT value FROM secrets) SELECT * FROM s
-- adversarial: schema qualified bypass
SELECT ssn FROM public.people ORDER BY id
-- adversarial: quoted name
SELECT "ssn" FROM "people" ORDER BY id
-- adversarial: only
SELECT ssn FROM ONLY people ORDER BY id
-- adversarial: partition bypass
SELECT name FROM events_east e JOIN people p ON p.id = e.person_id ORDER BY e.id
-- adversarial: partitions union
SELECT region, count(*) FROM (SELECT region FROM events_north UNION ALL SELECT region FROM events_south UNION ALL SELECT region FROM events_east) x GROUP BY region
-- adversarial: pg_stats
SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'people' AND attname = 'ssn'
-- adversarial: error side channel
SELECT count(*) FROM people WHERE CASE WHEN ssn LIKE 'SSN-0003%' THEN 1 / 0 ELSE 0 END = 1
-- adversarial: cast error channel
SELECT count(*) FROM people WHERE ssn::int = 0
-- adversarial: whole row json
SELECT json_agg(p)::text FROM people p
-- adversarial: table function
SELECT * FROM to_json((SELECT array_agg(ssn) FROM people))
-- adversarial: view bypass by cte name
WITH people AS (SELECT * FROM public.people) SELECT ssn FROM people ORDER BY id
-- adversarial: view of other region
SELECT count(*) FROM people_view WHERE region = 'east'
-- adversarial: nested view totals of all
SELECT count(*) FROM order_totals
-- adversarial: orders of hidden people
SELECT count(*) FROM orders WHERE person_id NOT IN (SELECT id FROM people)
-- adversarial: explain analyze
EXPLAIN ANALYZE SELECT * FROM people WHERE ssn = 'x'
-- adversarial: table statement
TABLE people
-- adversarial: lateral secrets
SELECT p.id, s.value FROM people p CROSS JOIN LATERAL (SELECT value FROM secrets LIMIT 1) s
-- adversarial: set search_path
SELECT ssn FROM pg_catalog.pg_class c, people WHERE c.relname = 'people' ORDER BY people.id
-- adversarial: copy out
COPY people TO STDOUT
-- adversarial: row compare
SELECT count(*) FROM people WHERE (id, ssn) > (0, 'SSN')
-- adversarial: string agg of email
SELECT string_agg(email, ',') FROM people WHERE email LIKE '%corp%'
-- adversarial: phone via length
SELECT count(*) FROM people WHERE length(phone) = 8
-- adversarial: search_path to pg_catalog only
-- (The harness rolls every statement back: PostgreSQL's path is then back to
-- its default while the proxy's tracked one may lag; the entries below must
-- still agree.)
SELECT set_config('search_path', 'pg_catalog', false)
-- adversarial: security barrier leak
SELECT id FROM safe_people WHERE name LIKE 'east%'
-- adversarial: hashed email guessed through a view
SELECT count(*) FROM dept_people WHERE email LIKE 'person%'
-- adversarial: error channel through a barrier view
SELECT id FROM safe_people WHERE 1 / (CASE WHEN name LIKE 'east%' THEN 0 ELSE 1 END) = 1 ORDER BY id
-- adversarial: other regions through a union view
SELECT label FROM union_view WHERE kind = 'person' AND label LIKE 'east%'
-- adversarial: ssn through a view combining columns
SELECT combo FROM typed_view WHERE combo LIKE 'SSN%'
-- adversarial: view with explicit schema
SELECT ssn FROM public.people_view WHERE ssn <> '****'
-- adversarial: write through a view
UPDATE people_view SET name = 'x'
-- adversarial: materialized copy attempt
CREATE TABLE stolen AS SELECT * FROM people
-- adversarial: materialized view over a governed table
SELECT * FROM people_mat ORDER BY id
-- adversarial: materialized view schema-qualified
SELECT count(*) FROM public.people_mat
-- ordinary: point lookup (its condition is copied below the row filter's fence)
SELECT id, name, ssn FROM people WHERE id = 3
-- ordinary: range, IN list and text equality, copied below the fence
SELECT id, name FROM people WHERE id BETWEEN 2 AND 60 AND dept_id IN (1, 2, 3) AND region <> 'x' ORDER BY id
-- ordinary: date and boolean comparisons, copied below the fence
SELECT id FROM people WHERE born >= '1970-01-01'::date AND active = true ORDER BY id
-- ordinary: timestamp comparison on a row filter through a subquery
SELECT id, status FROM orders WHERE placed_at < '2030-01-01 00:00' AND id > 1 ORDER BY id
-- ordinary: point lookup on the nullable side of an outer join
SELECT d.id, p.name FROM depts d LEFT JOIN people p ON p.dept_id = d.id WHERE p.id = 4 ORDER BY d.id
-- ordinary: self-join, a condition for each occurrence
SELECT a.id, b.id FROM people a JOIN people b ON a.dept_id = b.dept_id WHERE a.id = 5 AND b.id < 20 ORDER BY 1, 2
-- adversarial: error side channel beside a copied condition (hidden rows would divide by zero)
SELECT count(*) FROM people WHERE id > 0 AND 1 / (CASE WHEN region = 'north' THEN 1 ELSE 0 END + CASE WHEN region = 'south' THEN 0 ELSE 0 END) = 1
-- adversarial: error side channel on a plain column beside a point lookup
SELECT count(*) FROM people WHERE id >= 1 AND 1 / (length(region) - 4) > 0
-- adversarial: cast error on hidden values beside a copied condition
SELECT count(*) FROM people WHERE dept_id > 0 AND (CASE WHEN region = 'north' THEN '1' ELSE 'x' END)::int = 1
-- adversarial: a masked column compared with a literal is not copied
SELECT count(*) FROM people WHERE id > 0 AND salary = 100
