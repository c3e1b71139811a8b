// The admin's map of nodes: a world outline (Natural Earth land at 1:110m from world-atlas, shipped
// in this lazily loaded chunk, nothing fetched from elsewhere) in an equirectangular projection, and
// one keyboard-focusable marker per node with a location, coloured by online/offline.
import { useMemo, useState } from 'preact/hooks';
import { feature } from 'topojson-client';
import type { Topology, GeometryObject } from 'topojson-specification';
import land from 'world-atlas/land-110m.json';
import type { Node, NodeLocation } from '@planetlite/api/browser';
import { html } from './ui.js';

/** The SVG's user space: one unit per degree, x = longitude + 180, y = 90 - latitude. */
export const WIDTH = 360;
export const HEIGHT = 180;
export const project = ({ longitude, latitude }: Pick<NodeLocation, 'longitude' | 'latitude'>): [number, number] => [longitude + 180, 90 - latitude];

/**
 * A ring with its longitudes made continuous (no jump of more than 180° between neighbours), and
 * copies 360° to either side when it crosses the antimeridian, so that Chukotka or Fiji fill their
 * own piece of the map instead of a band across it (the SVG clips what falls outside). A ring
 * around the pole (Antarctica: it ends 360° from where it began) is drawn as it is.
 */
function unwrapped(ring: number[][]): number[][][] {
  const out: number[][] = [];
  let shift = 0;
  for (const [lon, lat] of ring) {
    const prev = out[out.length - 1];
    if (prev && lon! + shift - prev[0]! > 180) shift -= 360;
    else if (prev && lon! + shift - prev[0]! < -180) shift += 360;
    out.push([lon! + shift, lat!]);
  }
  if (shift !== 0) return [ring];
  const lons = out.map((p) => p[0]!);
  if (Math.min(...lons) >= -180 && Math.max(...lons) <= 180) return [out];
  const by = (d: number) => out.map(([lon, lat]) => [lon! + d, lat!]);
  return [out, by(Math.min(...lons) < -180 ? 360 : -360)];
}

/** The land's rings as one SVG path, computed once per page load. */
function landPath(): string {
  const topo = land as unknown as Topology<{ land: GeometryObject }>;
  const geo = feature(topo, topo.objects.land);
  const polygons = (geo.type === 'FeatureCollection' ? geo.features.map((f) => f.geometry) : [geo.geometry])
    .flatMap((g) => (g.type === 'MultiPolygon' ? g.coordinates : g.type === 'Polygon' ? [g.coordinates] : []));
  const fmt = (n: number) => n.toFixed(2).replace(/\.?0+$/, '');
  return polygons.flatMap((rings) => rings.flatMap(unwrapped).map((ring) => `M${ring.map(([lon, lat]) => project({ longitude: lon!, latitude: lat! }).map(fmt).join(',')).join('L')}Z`)).join('');
}

const where = (n: Node) => (n.location ? `${n.location.city} (${n.location.latitude}, ${n.location.longitude})` : 'no location');
const describeNode = (n: Node) => `${n.hostname}, ${n.state}${n.admin_state !== 'active' ? `, ${n.admin_state}` : ''}, site ${n.site}, ${where(n)}`;

export function NodeMap({ nodes }: { nodes: Node[] }) {
  const path = useMemo(landPath, []);
  const [picked, setPicked] = useState<string | null>(null);
  const placed = nodes.filter((n) => n.location);
  const unplaced = nodes.filter((n) => !n.location);
  const shown = placed.find((n) => n.id === picked);
  return html`<section aria-labelledby="map-h" class="node-map">
    <h2 id="map-h">Map</h2>
    <p class="legend"><span class="dot dot-online"></span> online <span class="dot dot-offline"></span> offline${' '}<span class="muted">· ${placed.length} of ${nodes.length} node${nodes.length === 1 ? '' : 's'} placed; Tab to a marker for its details</span></p>
    <svg viewBox=${`0 0 ${WIDTH} ${HEIGHT}`} role="group" aria-label=${`World map of ${placed.length} node${placed.length === 1 ? '' : 's'} with a location`} class="world">
      <rect width=${WIDTH} height=${HEIGHT} class="sea" />
      <path d=${path} class="land" aria-hidden="true" />
      ${placed.map((n) => {
        const [x, y] = project(n.location!);
        return html`<g key=${n.id} class=${`marker marker-${n.state}`} tabindex="0" role="img" aria-label=${describeNode(n)} data-node=${n.hostname}
            onFocus=${() => setPicked(n.id)} onMouseEnter=${() => setPicked(n.id)} onClick=${() => setPicked(n.id)}>
          <title>${describeNode(n)}</title>
          <circle cx=${x} cy=${y} r="2.6" />
        </g>`;
      })}
    </svg>
    <p class="map-pick" aria-live="polite">${shown ? describeNode(shown) : placed.length ? 'Pick a marker (Tab, hover or tap) to see its node here.' : 'No node has a location yet.'}</p>
    ${unplaced.length > 0 ? html`<div class="unplaced"><h3>Nodes without a location</h3>
      <ul class="plain">${unplaced.map((n) => html`<li key=${n.id}>${n.hostname} <span class="muted">(${n.site}, ${n.state})</span></li>`)}</ul>
      <p class="muted">Its site's PI or tech (or an admin) sets a node's location on the site's page in the Nodes table (Location), or with${' '}<code>planetlite node location NODE --city CITY --lat LATITUDE --lon LONGITUDE</code>.</p></div>` : null}
  </section>`;
}
