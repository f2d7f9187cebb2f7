"""Input preparation: robust decoding, landmarks, FFHQ/e4e alignment, per-domain resizing."""
from .domains import (DOMAIN_PREP, DomainPrep, crop_generated, domain_prep,
                      generated_content_box, prepare_image)
from .ffhq import (E4E_OUTPUT_SIZE, E4E_TRANSFORM_SIZE, FFHQ_OUTPUT_SIZE, FFHQ_TRANSFORM_SIZE,
                   FaceQuad, e4e_align, face_quad, ffhq_align, quad_to_output)
from .imageio import BadImageError, load_image, to_rgb8
from .landmarks import (BadLandmarksError, LandmarkDetector, LandmarkError,
                        MissingLandmarksError, MultipleFacesError, NoFaceError,
                        available_detectors, default_predictor_path, detect_landmarks,
                        dlib_faces, parse_landmarks, points_to_landmarks68,
                        register_detector)

__all__ = [
    "BadImageError", "BadLandmarksError", "DOMAIN_PREP", "DomainPrep", "E4E_OUTPUT_SIZE",
    "E4E_TRANSFORM_SIZE", "FFHQ_OUTPUT_SIZE", "FFHQ_TRANSFORM_SIZE", "FaceQuad",
    "LandmarkDetector", "LandmarkError", "MissingLandmarksError", "MultipleFacesError",
    "NoFaceError", "available_detectors", "crop_generated", "default_predictor_path",
    "detect_landmarks", "dlib_faces", "domain_prep", "e4e_align", "face_quad", "ffhq_align",
    "generated_content_box", "load_image", "parse_landmarks", "points_to_landmarks68",
    "prepare_image", "quad_to_output", "register_detector", "to_rgb8",
]
