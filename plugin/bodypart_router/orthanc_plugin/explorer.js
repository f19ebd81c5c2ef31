/* bodypart-router: show the body-part class, score and state in Orthanc Explorer.
 *
 * Orthanc 1.10's Explorer does not display user metadata, so this panel reads the
 * router's metadata through the REST API (the packed BodyPartResult, or the values written
 * one each: BodyPart, BodyPartScore, BodyPartState, BodyPartForwarded...) and shows it at the
 * top of the instance, series and study pages.
 * On a series or study it summarises the classes of (at most 200 of) its instances.
 */
(function () {
  var MAX_INSTANCES = 200;

  function panel(pageId) {
    var id = 'bodypart-router-' + pageId;
    $('#' + id).remove();
    var box = $('<div>').attr('id', id)
      .css({ border: '1px solid #88a', 'border-radius': '6px', padding: '0.5em 1em', margin: '0 0 1em 0',
             background: '#f4f6ff' })
      .append($('<strong>').text('Body part (bodypart-router)'))
      .append($('<div>').addClass('bodypart-router-body').text('loading...'));
    $('#' + pageId + ' div[data-role="content"]').first().prepend(box);
    return box.find('.bodypart-router-body');
  }

  // The result as separate values, whether the router wrote them one each or packed.
  function result(m) {
    var p = {};
    if (m.BodyPartResult) { try { p = JSON.parse(m.BodyPartResult) || {}; } catch (e) { p = {}; } }
    function pick(field, name) { return p[field] !== undefined ? p[field] : m[name]; }
    var fwd = pick('Forwarded', 'BodyPartForwarded');
    return { BodyPart: pick('Class', 'BodyPart'), BodyPartScore: pick('Score', 'BodyPartScore'),
             BodyPartState: pick('State', 'BodyPartState'), BodyPartModel: pick('Model', 'BodyPartModel'),
             BodyPartForwarded: Array.isArray(fwd) ? fwd.join(',') : fwd,
             BodyPartHeaderAudit: pick('HeaderAudit', 'BodyPartHeaderAudit'),
             BodyPartRegion: pick('Region', 'BodyPartRegion'), BodyPartView: pick('View', 'BodyPartView'),
             BodyPartRotation: stringOrUndefined(pick('Rotation', 'BodyPartRotation')),
             BodyPartInverted: stringOrUndefined(pick('Inverted', 'BodyPartInverted')),
             BodyPartSource: pick('Source', 'BodyPartSource') };
  }

  /* packed values are JSON numbers and booleans; the separate metadata are strings */
  function stringOrUndefined(v) {
    return v === undefined || v === null ? undefined : String(v);
  }

  function escapeHtml(s) {
    return $('<div>').text(s === undefined || s === null ? '' : String(s)).html();
  }

  /* "upright", "turned 90 deg" ..., plus ", inverted" when the polarity is wrong */
  function orientation(m) {
    if (m.BodyPartRotation === undefined && m.BodyPartInverted === undefined) { return '-'; }
    var r = m.BodyPartRotation === undefined || m.BodyPartRotation === '0' ? 'upright'
      : 'stored turned: rotate ' + m.BodyPartRotation + '\u00b0 clockwise to read';
    return r + (m.BodyPartInverted === 'true' ? ', polarity inverted' : '');
  }

  function showInstance(uuid) {
    var body = panel('instance');
    $.ajax({ url: '../instances/' + uuid + '/metadata?expand', dataType: 'json', cache: false,
      success: function (raw) {
        var m = result(raw);
        if (!m.BodyPartState) { body.text('not processed by the router'); return; }
        body.html(
          '<table>' +
          '<tr><td>Class</td><td><b id="bodypart-class">' + escapeHtml(m.BodyPart || '-') + '</b></td></tr>' +
          '<tr><td>Score</td><td>' + escapeHtml(m.BodyPartScore || '-') + '</td></tr>' +
          '<tr><td>Region</td><td id="bodypart-region">' + escapeHtml(m.BodyPartRegion || '-') + '</td></tr>' +
          '<tr><td>View</td><td id="bodypart-view">' + escapeHtml(m.BodyPartView || '-') + '</td></tr>' +
          '<tr><td>Orientation</td><td id="bodypart-orientation">' + escapeHtml(orientation(m)) + '</td></tr>' +
          '<tr><td>State</td><td>' + escapeHtml(m.BodyPartState) + '</td></tr>' +
          '<tr><td>Forwarded to</td><td>' + escapeHtml(m.BodyPartForwarded || '-') + '</td></tr>' +
          '<tr><td>Model</td><td>' + escapeHtml(m.BodyPartModel || '-') + '</td></tr>' +
          '<tr><td>Header audit</td><td>' + escapeHtml(m.BodyPartHeaderAudit || '-') + '</td></tr>' +
          '<tr><td>Decided by</td><td>' + escapeHtml(m.BodyPartSource || '-') + '</td></tr>' +
          '</table>');
      },
      error: function () { body.text('could not read the metadata'); } });
  }

  function showSummary(level, pageId, uuid) {
    var body = panel(pageId);
    $.ajax({ url: '../' + level + '/' + uuid + '/instances', dataType: 'json', cache: false,
      success: function (instances) {
        var ids = instances.slice(0, MAX_INSTANCES).map(function (i) { return i.ID; });
        var classes = {}, states = {}, pending = ids.length;
        if (pending === 0) { body.text('no instances'); return; }
        ids.forEach(function (id) {
          $.ajax({ url: '../instances/' + id + '/metadata?expand', dataType: 'json', cache: false,
            success: function (raw) {
              var m = result(raw), c = m.BodyPart || '(none)', s = m.BodyPartState || '(not processed)';
              if (m.BodyPartRegion) { c += ' / ' + m.BodyPartRegion; }
              classes[c] = (classes[c] || 0) + 1;
              states[s] = (states[s] || 0) + 1;
            },
            complete: function () {
              pending -= 1;
              if (pending > 0) { return; }
              var fmt = function (o) {
                return Object.keys(o).sort().map(function (k) {
                  return '<b>' + escapeHtml(k) + '</b> &times; ' + o[k];
                }).join(', ');
              };
              body.html('Classes: <span id="bodypart-classes">' + fmt(classes) + '</span><br>States: ' + fmt(states) +
                        (instances.length > MAX_INSTANCES ? '<br>(first ' + MAX_INSTANCES + ' instances)' : ''));
            } });
        });
      },
      error: function () { body.text('could not list the instances'); } });
  }

  $('#instance').live('pageshow', function () {
    if ($.mobile.pageData && $.mobile.pageData.uuid) { showInstance($.mobile.pageData.uuid); }
  });
  $('#series').live('pageshow', function () {
    if ($.mobile.pageData && $.mobile.pageData.uuid) { showSummary('series', 'series', $.mobile.pageData.uuid); }
  });
  $('#study').live('pageshow', function () {
    if ($.mobile.pageData && $.mobile.pageData.uuid) { showSummary('studies', 'study', $.mobile.pageData.uuid); }
  });
})();
