// Orthanc Explorer extension: a "Body-part router status" button on the home pages.
// Appended to the router's Explorer extension (orthanc.ExtendOrthancExplorer takes one
// script per plugin). Orthanc Explorer uses jQuery Mobile; rel="external" makes it a real
// page load instead of an in-app transition.
(function () {
  function addStatusButton(pageId) {
    $(pageId).live("pagebeforecreate", function () {
      if ($(pageId + " .bodypart-router-status").length) return;
      var button = $("<a>")
        .attr({ href: "../bodypart-router/status.html", rel: "external", "data-role": "button",
                "data-icon": "info", "data-theme": "e", "data-inline": "true" })
        .addClass("bodypart-router-status")
        .text("Body-part router status");
      $(pageId + " [data-role=content]").first().prepend(button);
    });
  }
  addStatusButton("#lookup");
  addStatusButton("#find-patients");
})();
